"""ser: speech emotion recognition, from training to ONNX to batch scoring.

The ``ser`` package itself holds the contract every stage shares: the label set, corpus
manifests, the single audio preprocessing path and the metadata each exported model carries.
"""

__version__ = "0.1.0"
