"""Export: trained checkpoints to self-describing ONNX graphs, checked before they are written."""
