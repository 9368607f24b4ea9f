"""Coercion of X into a list of samples, missing values, and what is wrong with one text.

The lowest layer of the package: it imports nothing from sktransfer but the exceptions, so
every estimator, the image pipeline and the diagnostics can use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from sktransfer.exceptions import InputError


def as_sequence(X: Any, what: str) -> Sequence[Any]:
    """X as a list-like of samples: lists, 1-D arrays, pandas/polars Series or one-column frames.

    Raises ValueError for empty input and for frames with several columns.

    Examples
    --------
    >>> import pandas as pd
    >>> list(as_sequence(pd.DataFrame({"review": ["fine", "dull"]}), "texts"))
    ['fine', 'dull']
    """
    X = _array_protocol(X)
    reject_unusable_matrices(X, what)
    if isinstance(X, Mapping):
        raise TypeError(f"expected a sequence of {what}, got a {type(X).__name__}: a mapping "
                        "would be read by its keys; pass list(X.values()) for its values")
    name = type(X).__module__.split(".")[0]
    if name in ("pandas", "polars") and hasattr(X, "columns"):
        columns = list(X.columns)
        if len(columns) != 1:
            raise ValueError(f"expected one column of {what}, got a frame with {len(columns)} "
                             f"columns: {columns[:5]}; select the column first")
        X = X[columns[0]]
    if name == "pandas" and hasattr(X, "to_numpy"):
        items = X.to_numpy(dtype=object)
    elif name == "polars" and hasattr(X, "to_list"):
        items = X.to_list()
    elif isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 1:
            raise ValueError(f"expected a 1-D sequence of {what}, got an array of shape {X.shape}")
        items = X
    elif isinstance(X, (str, bytes)) or not isinstance(X, Sequence):
        if isinstance(X, (str, bytes)) or not hasattr(X, "__iter__"):
            raise ValueError(
                f"expected a sequence of {what} (list, array, Series), got a single "
                f"{type(X).__name__}; wrap one sample in a list: [x]"
            )
        items = list(X)
    else:
        items = X
    if len(items) == 0:
        raise ValueError(f"found 0 samples: the input holds no {what}")
    return items


def _array_protocol(X: Any) -> Any:
    """An object that offers only the array protocol (``__array__``) as an ndarray."""
    if isinstance(X, (Sequence, np.ndarray, Mapping)) or not hasattr(X, "__array__") or \
            type(X).__module__.split(".")[0] in ("pandas", "polars", "scipy"):
        return X
    return np.asarray(X)


def reject_unusable_matrices(X: Any, what: str) -> None:
    """Clear errors for sparse matrices, complex numbers and 2-D inputs with no column."""
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"sparse input is not supported: {what} cannot be read from a sparse "
                        "matrix; pass a list, array or Series")
    if getattr(getattr(X, "dtype", None), "kind", None) == "c":
        raise ValueError(f"Complex data not supported: {what} cannot be complex numbers")
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) == 2 and shape[1] == 0:
        raise ValueError(f"0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is required: "
                         f"there is no column of {what}")


def is_missing(value: Any) -> bool:
    """None, NaN, pandas.NA or NaT.

    Examples
    --------
    >>> is_missing(None), is_missing(float("nan")), is_missing("")
    (True, True, False)
    """
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def text_row_errors(texts: Sequence[Any], rows: Sequence[Any]) -> dict[int, InputError]:
    """Position -> :class:`InputError` (naming ``rows[position]``) for every text that cannot
    be embedded (see :func:`text_problem`).

    Examples
    --------
    >>> {position: str(error)
    ...  for position, error in text_row_errors(["a fine film", None, " "], [10, 11, 12]).items()}
    {1: 'row 11: missing text (None/NaN)', 2: 'row 12: empty text'}
    """
    errors = {}
    for position, text in enumerate(texts):
        problem = text_problem(text)
        if problem is not None:
            errors[position] = InputError(rows[position], problem)
    return errors


def text_problem(text: Any) -> str | None:
    """What makes ``text`` impossible to embed, or None when it is a usable string.

    Examples
    --------
    >>> text_problem("a fine film"), text_problem("  "), text_problem(None)
    (None, 'empty text', 'missing text (None/NaN)')
    """
    if is_missing(text):
        return "missing text (None/NaN)"
    if not isinstance(text, str):
        return f"expected a string, got {type(text).__name__} {text!r:.40}"
    if not text.strip():
        return "empty text"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (f"not valid Unicode: an unpaired surrogate {text[error.start]!r} at character "
                f"{error.start} (text decoded with errors='surrogateescape'? decode it with "
                "the right encoding)")
    return None


def materialize(X: Any) -> Any:
    """X itself, or a list of it when X is a one-shot iterator (a generator): ``fit`` and
    ``transform`` of ``fit_transform`` must both see every sample."""
    if isinstance(X, Iterator):
        return list(X)
    return X


def coerce_image_batch(X: Any) -> list[Any] | None:
    """Split a numeric array holding several images into per-image arrays.

    Returns None when ``X`` is not a numeric ndarray (then it is a sequence of items).
    Accepted: (N, H, W) grey, (N, H, W, C) with C in 1, 3, 4, and (N, H*W) flattened square
    grey images, the layout of scikit-learn's ``load_digits`` and OpenML's MNIST.

    Examples
    --------
    >>> import numpy as np
    >>> [image.shape for image in coerce_image_batch(np.zeros((2, 16)))]
    [(4, 4), (4, 4)]
    """
    if not isinstance(X, np.ndarray) or X.dtype == object:
        return None
    if X.ndim == 4:
        if X.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"a 4-D array must be N×H×W×C with C in (1, 3, 4); got shape {X.shape}"
                + (". Channels-first batches: pass X.transpose(0, 2, 3, 1)"
                   if X.shape[1] in (1, 3, 4) else "")
            )
        return list(X)
    if X.ndim == 3:
        return list(X)
    if X.ndim == 2:
        side = math.isqrt(X.shape[1])
        if side * side != X.shape[1] or side == 0:
            raise ValueError(
                f"a 2-D numeric array is read as flattened square grey images, one per row, but "
                f"{X.shape[1]} values per row is not a square number. Pass a list of images, an "
                "N×H×W or N×H×W×C array, or reshape your rows first."
            )
        return list(X.reshape(X.shape[0], side, side))
    raise ValueError(f"cannot read images from a {X.ndim}-D numeric array of shape {X.shape}")


def check_input_shape(estimator: Any, X: Any, *, reset: bool) -> None:
    """Record (``reset``) or check an estimator's ``n_features_in_`` and
    ``feature_names_in_`` when X is 2-D (a frame, or flattened images): the samples
    themselves are read by the estimator, not by scikit-learn's ``check_array``."""
    if getattr(X, "ndim", 1) == 2 and hasattr(X, "shape"):
        from sklearn.utils.validation import validate_data

        validate_data(estimator, X, reset=reset, skip_check_array=True)


def column_name(X: Any) -> str | None:
    """The name of the DataFrame column (or named Series) X came from, if any."""
    columns = getattr(X, "columns", None)
    if columns is not None and len(columns) == 1:
        return str(next(iter(columns)))
    name = getattr(X, "name", None) if type(X).__module__.split(".")[0] in (
        "pandas", "polars") else None
    return None if name is None else str(name)


def image_items(X: Any) -> list[Any]:
    """X as a list of image items: arrays of several images are split, containers unpacked."""
    X = _array_protocol(X)
    reject_unusable_matrices(X, "images")
    batch = coerce_image_batch(X)
    items = list(batch if batch is not None else as_sequence(X, "images"))
    if not items:
        raise ValueError("found 0 samples: the input holds no images")
    return items


def text_items(X: Any) -> list[Any]:
    """X as a list of texts (each still to be checked with :func:`text_problem`)."""
    return list(as_sequence(X, "texts"))
