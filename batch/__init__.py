"""Batch scoring of audio folders with exported ONNX models (``ser-batch``); never imports torch."""
