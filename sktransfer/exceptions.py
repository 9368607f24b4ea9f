"""Exceptions and warnings raised by sktransfer."""

from __future__ import annotations


def describe(error: BaseException) -> str:
    """``Type: first line of its message`` (``Type`` alone when it has none): how an error
    from a library is quoted inside one of ours, which names the file or parameter.

    Examples
    --------
    >>> describe(EOFError()), describe(ValueError("bad value\\nmore detail"))
    ('EOFError', 'ValueError: bad value')
    """
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class InputError(ValueError):
    """One row of the input cannot be embedded.

    ``row`` is the 0-based position of the offending sample in the input, so that
    ``X[row]`` (or ``X.iloc[row]``) shows it; ``column`` names the DataFrame column it came
    from, when it came from one.
    """

    def __init__(self, row: int, problem: str, column: str | None = None):
        self.row = row
        self.problem = problem
        self.column = column
        where = f"row {row}" if column is None else f"row {row}, column {column!r}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple:
        return type(self), (self.row, self.problem, self.column)


class ModelUnavailableError(RuntimeError):
    """A model cannot be found locally and cannot be downloaded."""


class NonFiniteOutputError(RuntimeError):
    """A network produced NaN or infinite features; the message names the model and rows."""


class CacheError(RuntimeError):
    """The feature cache cannot be used; the message names its file, the cause and the fix.

    No vector is ever served from a cache that raised it.
    """


class WeightsMismatchError(RuntimeError):
    """Weights loaded now differ from the weights an estimator was fitted with."""


class LicenseWarning(UserWarning):
    """The weights' licence is non-commercial or unknown: check it before you ship."""


class EmbeddingWarning(UserWarning):
    """Some rows could not be embedded and were filled as ``on_error`` says."""


class WeightsReinterpretedWarning(UserWarning):
    """Checkpoint weights were changed to fit the network (position embeddings resampled to
    another input size, a layout converted); the message names what changed."""


class TrainingDivergedError(ValueError):
    """Fine-tuning diverged (the loss or the outputs became NaN or infinite); the message
    names the epoch and the learning rate. No model is kept: lower ``lr`` and fit again."""
