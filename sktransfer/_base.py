"""BaseEmbedder: what every frozen embedder shares.

Parameters are validated declaratively; the backbone is looked up (and loaded at most once per
process) by its identity, so estimators never hold weights: clones, pickles and grid-search
candidates stay small and share one copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names, _check_n_features, check_is_fitted

from sktransfer.cache import KEY_SCHEME, FeatureCache, as_feature_cache
from sktransfer.exceptions import (
    EmbeddingWarning,
    InputError,
    LicenseWarning,
    WeightsMismatchError,
)

# Bump when a change to sktransfer changes the vectors it computes: old cache entries then
# live in other spaces and are never returned.
FEATURES_VERSION = 1

logger = logging.getLogger("sktransfer")


class BaseEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared machinery of :class:`ImageEmbedder` and :class:`TextEmbedder`.

    Subclasses provide ``_items(X)`` (X as a list of samples), ``_get_backbone()``,
    ``_n_features(backbone)``, ``_identity(backbone)`` (everything that determines the output),
    ``_content_key(item)`` (a digest of one sample's content, or None) and
    ``_embed(items, rows, backbone)`` (vectors plus the errors of the rows that failed).
    """

    _learns_nothing = True  # fit records settings only: features can be computed once

    _parameter_constraints: ClassVar[dict] = {
        "model": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "precision": [StrOptions({"auto", "float32", "bfloat16", "float16"})],
        "n_threads": [None, Interval(Integral, 1, None, closed="left")],
        "on_error": [StrOptions({"raise", "zeros", "nan"})],
        "progress": ["boolean"],
        "cache": [None, str, os.PathLike, FeatureCache],
    }

    def fit(self, X: Any, y: Any = None) -> BaseEmbedder:
        """Check the parameters and the input, and record what the embedding will be.

        Frozen embedders learn nothing from the data: ``fit`` is cheap. It loads the backbone
        (once per process) to record ``n_features_out_``, ``weights_digest_`` and ``license_``.

        Parameters
        ----------
        X : sequence of samples
            See the class docstring for the accepted input types.
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        self._validate_params()
        self._items(X, reset=True)
        backbone = self._get_backbone()
        self.n_features_out_ = self._n_features(backbone)
        self.weights_digest_ = backbone.digest
        self.license_ = backbone.license
        warn_about_license(self.model, self.license_)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Embed every sample of ``X``.

        Returns
        -------
        embeddings : ndarray of shape (n_samples, n_features_out_), float32
            A pandas or polars DataFrame when ``set_output`` asks for one.
        """
        check_is_fitted(self, "n_features_out_")
        items = self._items(X, reset=False)
        return self._transform_items(items, range(len(items)))

    def _transform_items(self, items: Sequence[Any], labels: Sequence[int]) -> np.ndarray:
        """Embed ``items``; errors and warnings call ``items[i]`` row ``labels[i]``."""
        backbone = self._get_backbone()
        if backbone.digest != self.weights_digest_:
            raise WeightsMismatchError(
                f"{type(self).__name__} was fitted with weights {self.weights_digest_[:12]}… but "
                f"model {self.model!r} now loads weights {backbone.digest[:12]}…; refit it"
            )
        return self._embed_with_cache(items, backbone, labels)

    def _embed_with_cache(self, items: Sequence[Any], backbone: Any,
                          labels: Sequence[int]) -> np.ndarray:
        """Embed each distinct sample once, reading and writing the feature cache."""
        n, dim = len(items), self.n_features_out_
        keys = [self._content_key(item) for item in items]
        owner = np.arange(n)  # the row whose vector each row takes
        first_row: dict[bytes, int] = {}
        for row, key in enumerate(keys):
            if key is not None:
                owner[row] = first_row.setdefault(key, row)
        distinct = np.flatnonzero(owner == np.arange(n))
        out = np.zeros((n, dim), dtype=np.float32)
        cache = as_feature_cache(self.cache)
        todo = distinct
        if cache is not None:
            space, description = self._space(backbone)
            keyed = np.array([row for row in distinct if keys[row] is not None], dtype=int)
            vectors, found = cache.lookup(space, [keys[row] for row in keyed], dim)
            out[keyed[found]] = vectors[found]
            todo = np.setdiff1d(distinct, keyed[found])
            logger.debug("cache: %d of %d distinct samples found", found.sum(), len(distinct))
        problems: dict[int, str] = {}  # position in items -> what went wrong
        if len(todo):
            position_of = {labels[row]: row for row in todo}
            vectors, failures = self._embed([items[row] for row in todo],
                                            [labels[row] for row in todo], backbone)
            out[todo] = vectors
            problems = {position_of[error.row]: error.problem for error in failures}
            if cache is not None:
                new = [row for row in todo if keys[row] is not None and row not in problems]
                cache.store(space, [keys[row] for row in new], out[new], description)
        out = out[owner]
        failed = {row: InputError(labels[row], problems[int(owner[row])])
                  for row in range(n) if int(owner[row]) in problems}
        return self._fill(out, failed)

    def _space(self, backbone: Any) -> tuple[str, dict[str, Any]]:
        """The cache space: a digest of everything that determines the output."""
        description = {"estimator": type(self).__name__, "features_version": FEATURES_VERSION,
                       "keys": KEY_SCHEME, **self._identity(backbone)}
        text = json.dumps(description, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32], description

    @property
    def _n_features_out(self) -> int:
        return self.n_features_out_

    def _fill(self, out: np.ndarray, failed: dict[int, InputError]) -> np.ndarray:
        """Apply ``on_error`` to the rows that failed (by position); warn once with a count."""
        if not failed:
            return out
        out[list(failed)] = 0.0 if self.on_error == "zeros" else np.nan
        failures = list(failed.values())
        shown = "; ".join(str(f) for f in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        warnings.warn(
            f"{len(failures)} of {len(out)} rows could not be embedded and were filled with "
            f"{self.on_error}: {shown}{more}",
            EmbeddingWarning,
            stacklevel=3,
        )
        return out

    def _check_input_shape(self, X: Any, *, reset: bool) -> None:
        """Record or check ``n_features_in_`` / ``feature_names_in_`` for 2-D inputs."""
        if getattr(X, "ndim", 1) == 2 and hasattr(X, "shape"):
            _check_feature_names(self, X, reset=reset)
            _check_n_features(self, X, reset=reset)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.non_deterministic = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


_WARNED_LICENSES: set[tuple[str, str]] = set()
_NON_COMMERCIAL = re.compile(r"(\bnc\b|-nc-|-nc$|non-?commercial|research[- ]only)", re.I)


def license_restriction(license_: str | None) -> str | None:
    """"non-commercial", "unknown" or None (no known restriction).

    Examples
    --------
    >>> license_restriction("CC-BY-NC-SA-4.0"), license_restriction("apache-2.0")
    ('non-commercial', None)
    >>> license_restriction("unknown"), license_restriction("other")
    ('unknown', 'unknown')
    """
    text = (license_ or "").strip().lower()
    if text in ("", "unknown", "other", "none", "unlicensed"):
        return "unknown"
    if _NON_COMMERCIAL.search(text):
        return "non-commercial"
    return None


def warn_about_license(model: str, license_: str | None) -> None:
    """Warn once per process and model when its weights' licence may forbid your use."""
    restriction = license_restriction(license_)
    if restriction is None or (model, str(license_)) in _WARNED_LICENSES:
        return
    _WARNED_LICENSES.add((model, str(license_)))
    advice = ("it may not be used commercially" if restriction == "non-commercial" else
              "check the model card before you use it, above all commercially")
    warnings.warn(f"the weights of model {model!r} have a {restriction} licence "
                  f"({license_!r}): {advice}", LicenseWarning, stacklevel=3)


def as_sequence(X: Any, what: str) -> Sequence[Any]:
    """X as a list-like of samples: lists, 1-D arrays, pandas/polars Series or one-column frames.

    Raises ValueError for empty input and for frames with several columns.
    """
    reject_unusable_matrices(X, what)
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


def reject_unusable_matrices(X: Any, what: str) -> None:
    """Clear errors for sparse matrices and for 2-D inputs with no column at all."""
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"sparse input is not supported: {what} cannot be read from a sparse "
                        "matrix; pass a list, array or Series")
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) == 2 and shape[1] == 0:
        raise ValueError(f"0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is required: "
                         f"there is no column of {what}")


def is_missing(value: Any) -> bool:
    """None, NaN, pandas.NA or NaT."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")
