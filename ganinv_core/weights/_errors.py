"""Errors raised while resolving, reading or writing generator weights."""


class WeightsError(ValueError):
    """One line naming the file (or source) and the reason it cannot be used."""


class UnsupportedNetworkError(WeightsError):
    """A valid network this project does not support (StyleGAN3, conditional, TensorFlow)."""
