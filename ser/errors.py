"""Exception types shared by every stage, so callers can turn each into a one-line message."""


class SerError(Exception):
    """Base class: ``str(error)`` is a complete one-line message for the user."""


class AudioError(SerError):
    """An audio file could not be decoded or holds no usable signal."""


class CorpusError(SerError):
    """A corpus or manifest cannot be used for training or evaluation."""


class ModelError(SerError):
    """A model file is missing, unreadable or lacks the metadata ser needs."""


class DeviceError(ModelError):
    """The device asked for (CUDA) cannot run this model here; the message says what to install."""
