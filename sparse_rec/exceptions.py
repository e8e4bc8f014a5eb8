"""Exceptions and warnings raised by sparse_rec."""

from sklearn.exceptions import NotFittedError

__all__ = ["NotFittedError", "DivergenceError", "DataFormatError"]


class DivergenceError(FloatingPointError):
    """Training produced non-finite values (loss or weights).

    Raised instead of returning a model with NaN or infinite factors; the
    message names the epoch and the remedy (usually a smaller
    ``learning_rate``).
    """


class DataFormatError(ValueError):
    """A data file or folder does not have the expected layout."""
