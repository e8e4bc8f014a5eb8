"""Exceptions and warnings raised by sparse_rec."""

try:
    # The very class scikit-learn raises, so either library's handlers catch it.
    from sklearn.exceptions import NotFittedError
except ImportError:  # a serving environment without scikit-learn

    class NotFittedError(ValueError, AttributeError):
        """A model was used before ``fit`` (scikit-learn's class when installed)."""

__all__ = ["NotFittedError", "DivergenceError", "DataFormatError"]


class DivergenceError(FloatingPointError):
    """Training produced non-finite values (loss or weights).

    Raised instead of returning a model with NaN or infinite factors; the
    message names the epoch and the remedy (usually a smaller
    ``learning_rate``).
    """


class DataFormatError(ValueError):
    """A data file or folder does not have the expected layout."""
