"""BaseEmbedder: what every frozen embedder shares.

Parameters are validated declaratively; the backbone is looked up (and loaded at most once per
process) by its identity, so estimators never hold weights: clones, pickles and grid-search
candidates stay small and share one copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names, _check_n_features, check_is_fitted

from sktransfer._input import column_name, materialize
from sktransfer.backbones._registry import record_provenance
from sktransfer.cache import KEY_SCHEME, FeatureCache, as_feature_cache
from sktransfer.exceptions import (
    EmbeddingWarning,
    InputError,
    NonFiniteOutputError,
    WeightsMismatchError,
)

# Work is grouped in chunks of this many batches: texts are bucketed by length within one, and
# the command line writes its output one at a time (memory stays flat whatever the count).
BATCHES_PER_CHUNK = 32

# Bump when a change to sktransfer changes the vectors it computes: old cache entries then
# live in other spaces and are never returned.
FEATURES_VERSION = 1

logger = logging.getLogger("sktransfer")


class BaseEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared machinery of :class:`ImageEmbedder` and :class:`TextEmbedder`.

    Subclasses provide ``_items(X)`` (X as a list of samples), ``_get_backbone()``,
    ``_n_features(backbone)``, ``_plan(backbone)`` (how the network will run, decided without
    building anything), ``_identity(backbone, plan)`` (everything that determines the output),
    ``_content_key(item)`` (a digest of one sample's content, or None) and
    ``_embed_batches(items, rows, backbone, plan)``, which yields the plan that actually runs
    and then, batch by batch, ``(positions, vectors, errors, keys)``: ``keys`` holds, where
    not None, the content key of what was really embedded (a file read once, its bytes
    hashed and decoded), which the cache stores under instead of the key looked up.
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
        self._items(materialize(X), reset=True)
        backbone = self._get_backbone()
        self.n_features_out_ = self._n_features(backbone)
        self.weights_digest_ = backbone.digest
        plan = self._plan(backbone)
        self.precision_ = getattr(plan, "precision", plan)  # an image plan says more
        self._record_fit(backbone)
        record_provenance(self, backbone)
        return self

    def _record_fit(self, backbone: Any) -> None:
        """Record what a subclass adds to the fitted attributes (nothing by default)."""

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(X).transform(X)``; a generator is read once, not consumed by ``fit``."""
        X = materialize(X)
        return self.fit(X, y, **fit_params).transform(X)

    def transform(self, X: Any) -> np.ndarray:
        """Embed every sample of ``X``.

        Returns
        -------
        embeddings : ndarray of shape (n_samples, n_features_out_), float32
            A pandas or polars DataFrame when ``set_output`` asks for one.
        """
        check_is_fitted(self, "n_features_out_")
        items = self._items(X, reset=False)
        return self.embed_rows(items, range(len(items)), column=column_name(X))

    def embed_rows(self, items: Sequence[Any], rows: Sequence[Any],
                   column: str | None = None, *,
                   report: dict[Any, InputError] | None = None,
                   on_done: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed ``items`` (a list of samples) whose errors and warnings call ``items[i]``
        row ``rows[i]`` (of DataFrame column ``column``, if given): for callers that embed a
        subset of a larger input.

        With ``report`` (a dict), rows filled under ``on_error`` are recorded there (row ->
        error) instead of being announced by a warning. ``on_done(n)`` is called as soon as
        ``n`` more distinct samples have their vector (found in the cache, or computed and
        stored in it): what a run interrupted then has finished.

        Returns a plain float32 array (no ``set_output`` container).
        """
        check_is_fitted(self, "n_features_out_")
        backbone = self._get_backbone()
        if backbone.digest != self.weights_digest_:
            raise WeightsMismatchError(
                f"{type(self).__name__} was fitted with weights {self.weights_digest_[:12]}… but "
                f"model {self.model!r} now loads weights {backbone.digest[:12]}…; refit it"
            )
        try:
            return self._embed_with_cache(list(items), backbone, list(rows), column, report,
                                          on_done)
        except InputError as error:
            if column is None or error.column is not None:
                raise
            raise InputError(error.row, error.problem, column) from None

    def _embed_with_cache(self, items: list[Any], backbone: Any, labels: list[Any],
                          column: str | None = None,
                          report: dict[Any, InputError] | None = None,
                          on_done: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed each distinct sample once, reading the feature cache first and storing each
        finished batch in it as soon as it is done."""
        n = len(items)
        keys = [self._content_key(item) for item in items]
        owner = np.arange(n)  # the row whose vector each row takes
        first_row: dict[bytes, int] = {}
        for row, key in enumerate(keys):
            if key is not None:
                owner[row] = first_row.setdefault(key, row)
        distinct = np.flatnonzero(owner == np.arange(n))
        out = np.zeros((n, self.n_features_out_), dtype=np.float32)
        cache = as_feature_cache(self.cache)
        plan = self._plan(backbone)
        todo = distinct
        if cache is not None:
            space, _ = self._space(backbone, plan)
            keyed = np.array([row for row in distinct if keys[row] is not None], dtype=int)
            vectors, found = cache.lookup(space, [keys[row] for row in keyed],
                                          self.n_features_out_)
            out[keyed[found]] = vectors[found]
            todo = np.setdiff1d(distinct, keyed[found])
            logger.debug("cache: %d of %d distinct samples found", found.sum(), len(distinct))
            if on_done is not None and found.any():
                on_done(int(found.sum()))
        failed_rows: dict[int, InputError] = {}
        if len(todo):
            for n_done, errors in self._run(todo, items, keys, labels, backbone, plan, cache,
                                            out):
                failed_rows.update(errors)
                if on_done is not None:
                    on_done(n_done)
        out = out[owner]
        failed = {row: InputError(labels[row], failed_rows[int(owner[row])].problem, column)
                  for row in range(n) if int(owner[row]) in failed_rows}
        if report is not None:
            report.update({error.row: error for error in failed.values()})
            return self._fill(out, failed, warn=False)
        return self._fill(out, failed)

    def _run(self, todo: np.ndarray, items: list[Any], keys: list[bytes | None],
             labels: list[Any], backbone: Any, plan: Any, cache: FeatureCache | None,
             out: np.ndarray) -> Iterator[tuple[int, dict[int, InputError]]]:
        """Embed the rows ``todo`` into ``out``, storing each batch; yields, per batch, how
        many rows it embedded and its failed rows (row -> error)."""
        batches = self._embed_batches([items[row] for row in todo],
                                      [labels[row] for row in todo], backbone, plan)
        plan = next(batches)  # what actually runs: the space its vectors are stored in
        space, description = self._space(backbone, plan) if cache is not None else (None, None)
        bar = _progress_bar(self.progress, len(todo), type(self).__name__)
        try:
            for positions, vectors, errors, decoded in batches:
                done = todo[positions]
                self._check_output(vectors, [labels[row] for row in done])
                out[done] = vectors
                if cache is not None:
                    stored = [(row, found or keys[row]) for row, found in
                              zip(done, decoded, strict=True) if (found or keys[row])]
                    cache.store(space, [key for _, key in stored],
                                out[[row for row, _ in stored]], description)
                if bar is not None:
                    bar.update(len(positions) + len(errors))
                yield len(positions), {int(todo[position]): error
                                       for position, error in errors.items()}
        finally:
            if bar is not None:
                bar.close()

    def _check_output(self, vectors: np.ndarray, rows: list[Any]) -> None:
        """Refuse vectors of the wrong width, and NaN or infinite ones (broken weights, an
        overflow): a silently wrong vector would poison every model trained on it."""
        if vectors.shape[1:] != (self.n_features_out_,):
            raise RuntimeError(f"{self.model!r} returned {vectors.shape[1:]} features per "
                               f"sample where {self.n_features_out_} were expected")
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if len(bad):
            shown = ", ".join(str(rows[i]) for i in bad[:10])
            more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
            raise NonFiniteOutputError(
                f"model {self.model!r} produced NaN or infinite values for rows {shown}{more}; "
                "its weights may be broken (check the checkpoint), or the precision too low "
                "for it (try precision='float32')")

    def _space(self, backbone: Any, plan: Any) -> tuple[str, dict[str, Any]]:
        """The cache space: a digest of everything that determines the output."""
        description = {"estimator": type(self).__name__, "features_version": FEATURES_VERSION,
                       "keys": KEY_SCHEME, **self._identity(backbone, plan)}
        text = json.dumps(description, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32], description

    @property
    def _n_features_out(self) -> int:
        return self.n_features_out_

    def _fill(self, out: np.ndarray, failed: dict[int, InputError], *,
              warn: bool = True) -> np.ndarray:
        """Apply ``on_error`` to the rows that failed (by position); warn once with a count."""
        if not failed:
            return out
        out[list(failed)] = 0.0 if self.on_error == "zeros" else np.nan
        if not warn:
            return out
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


def _progress_bar(enabled: bool, total: int, description: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="sample")
