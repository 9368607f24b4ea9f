"""Exceptions and warnings raised by sktransfer."""

from __future__ import annotations


class InputError(ValueError):
    """One row of the input cannot be embedded.

    ``row`` is the 0-based position of the offending sample in the input, so that
    ``X[row]`` (or ``X.iloc[row]``) shows it.
    """

    def __init__(self, row: int, problem: str):
        self.row = row
        self.problem = problem
        super().__init__(f"row {row}: {problem}")


class ModelUnavailableError(RuntimeError):
    """A model cannot be found locally and cannot be downloaded."""


class WeightsMismatchError(RuntimeError):
    """Weights loaded now differ from the weights an estimator was fitted with."""


class LicenseWarning(UserWarning):
    """The weights' licence is non-commercial or unknown: check it before you ship."""


class EmbeddingWarning(UserWarning):
    """Some rows could not be embedded and were filled as ``on_error`` says."""
