"""ser: speech emotion recognition, from training to ONNX to batch scoring.

The ``ser`` package itself holds the contract every stage shares: the label set, corpus
manifests, the single audio preprocessing path and the metadata each exported model carries.
It also offers the scoring API (:func:`load_model`), imported only when first used, so that
``import ser`` stays light.
"""

__version__ = "0.7.1"

_API = ("FileResult", "Model", "Prediction", "load_model")
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    """The scoring API, from :mod:`ser.batch.api`, loaded on first use."""
    if name in _API:
        from ser.batch import api

        return getattr(api, name)
    raise AttributeError(f"module 'ser' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
