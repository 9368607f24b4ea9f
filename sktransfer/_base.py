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
from dataclasses import dataclass, field
from numbers import Integral
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from sktransfer._input import check_input_shape, column_name, materialize
from sktransfer.backbones._contract import Backbone
from sktransfer.backbones._registry import record_provenance
from sktransfer.backbones._runtime import PRECISIONS
from sktransfer.cache import KEY_SCHEME, FeatureCache, as_feature_cache
from sktransfer.exceptions import (
    EmbeddingWarning,
    InputError,
    NonFiniteOutputError,
    WeightsMismatchError,
)
from sktransfer.modality import Encoder, Modality

if TYPE_CHECKING:
    from sktransfer.backbones._engines import Execution

# Bump when a change to sktransfer changes the vectors it computes: old cache entries then
# live in other spaces and are never returned.
FEATURES_VERSION = 1

logger = logging.getLogger("sktransfer")


B = TypeVar("B", bound=Backbone)  # the backbone protocol of a subclass's kind of input

# An estimator's parameters as dataclass fields, each declared once with its type and default;
# the generated ``__init__`` only stores them, as scikit-learn requires (``get_params`` reads
# its signature). Equality and repr stay scikit-learn's; every parameter but ``model`` is
# keyword-only.
parameters = dataclass(eq=False, repr=False, kw_only=True)
PathLike = str | os.PathLike[str]


@parameters
class BaseEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator,
                   Generic[B]):
    """Shared machinery of :class:`ImageEmbedder` and :class:`TextEmbedder`.

    What differs between images and texts (items from X, content keys, batching) is asked
    of ``_modality``. A subclass adds four steps, the same for images and texts:
    ``_get_backbone()``; ``_plan(backbone)``, the :class:`Execution` it will run (decided
    without building anything: a fully cached call opens nothing);
    ``_identity(backbone, execution)``, everything that determines the output (the cache
    space); and ``_encoder(backbone, execution)``, the opened forward pass, whose own
    ``execution`` says what actually runs. ``_fitted(backbone)`` gives the fitted
    attributes beyond the common ones, ``n_features_out_`` among them.
    """

    model: str = field(default="", kw_only=False)  # each kind sets its default
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    n_threads: int | None = None
    on_error: str = "raise"
    progress: bool = False
    cache: PathLike | FeatureCache | None = None

    _modality: ClassVar[Modality]
    learns_nothing: ClassVar[bool] = True  # fit records settings only: features are computed once

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "model": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "precision": [StrOptions(set(PRECISIONS))],
        "n_threads": [None, Interval(Integral, 1, None, closed="left")],
        "on_error": [StrOptions({"raise", "zeros", "nan"})],
        "progress": ["boolean"],
        "cache": [None, str, os.PathLike, FeatureCache],
    }

    def fit(self, X: Any, y: Any = None) -> BaseEmbedder[B]:
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
        for name, value in self._fitted(backbone).items():
            setattr(self, name, value)
        self.weights_digest_ = backbone.digest
        self.precision_ = self._plan(backbone).precision
        record_provenance(self, backbone)
        return self

    def _items(self, X: Any, *, reset: bool) -> list[Any]:
        items = self._modality.items(X)
        check_input_shape(self, X, reset=reset)
        return items

    def _content_key(self, item: Any) -> bytes | None:
        # Only a cache needs a file's content (so that renamed files hit); within one call
        # the same path twice is enough to embed it once, without reading every file twice.
        return self._modality.content_key(item, read_files=self.cache is not None)

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

    def _embed_with_cache(self, items: list[Any], backbone: B, row_names: list[Any],
                          column: str | None = None,
                          report: dict[Any, InputError] | None = None,
                          on_done: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed each distinct sample once, reading the feature cache first and storing each
        finished batch in it as soon as it is done; errors name ``row_names[position]``."""
        n = len(items)
        keys = [self._content_key(item) for item in items]
        first_copy = np.arange(n)  # the row whose vector each row takes (same content)
        first_row: dict[bytes, int] = {}
        for row, key in enumerate(keys):
            if key is not None:
                first_copy[row] = first_row.setdefault(key, row)
        distinct = np.flatnonzero(first_copy == np.arange(n))
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
            for n_done, errors in self._run(todo, items, keys, row_names, backbone, plan,
                                            cache, out):
                failed_rows.update(errors)
                if on_done is not None:
                    on_done(n_done)
        out = out[first_copy]
        failed = {row: InputError(row_names[row], failed_rows[int(first_copy[row])].problem,
                                  column)
                  for row in range(n) if int(first_copy[row]) in failed_rows}
        if report is not None:
            report.update({error.row: error for error in failed.values()})
            return self._fill(out, failed, warn=False)
        return self._fill(out, failed)

    def _run(self, todo: np.ndarray, items: list[Any], keys: list[bytes | None],
             row_names: list[Any], backbone: B, plan: Execution,
             cache: FeatureCache | None, out: np.ndarray
             ) -> Iterator[tuple[int, dict[int, InputError]]]:
        """Embed the rows ``todo`` into ``out``, storing each batch; yields, per batch, how
        many rows it embedded and its failed rows (row -> error)."""
        encoder = self._encoder(backbone, plan)
        # what actually runs (an export may have fallen back): the space its vectors go to
        space, description = (self._space(backbone, encoder.execution) if cache is not None
                              else (None, None))
        bar = _progress_bar(self.progress, len(todo), type(self).__name__)
        try:
            for batch in encoder([items[row] for row in todo], [row_names[row] for row in todo]):
                done = todo[batch.positions]
                self._check_output(batch.vectors, [row_names[row] for row in done])
                out[done] = batch.vectors
                if cache is not None:
                    # under the key of what was embedded (a file's bytes, read once), or
                    # the key looked up
                    stored = [(row, embedded or keys[row]) for row, embedded in
                              zip(done, batch.keys, strict=True) if (embedded or keys[row])]
                    cache.store(space, [key for _, key in stored],
                                out[[row for row, _ in stored]], description)
                if bar is not None:
                    bar.update(len(batch.positions) + len(batch.failed))
                yield len(batch.positions), {int(todo[position]): error
                                             for position, error in batch.failed.items()}
        finally:
            if bar is not None:
                bar.close()

    # ---- the four steps a subclass provides (see the class docstring) -----------------
    def _get_backbone(self) -> B:
        raise NotImplementedError

    def _fitted(self, backbone: B) -> dict[str, Any]:
        raise NotImplementedError

    def _plan(self, backbone: B) -> Execution:
        raise NotImplementedError

    def _identity(self, backbone: B, execution: Execution) -> dict[str, Any]:
        raise NotImplementedError

    def _encoder(self, backbone: B, execution: Execution) -> Encoder:
        raise NotImplementedError

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

    def _space(self, backbone: B, execution: Execution) -> tuple[str, dict[str, Any]]:
        """The cache space: a digest of everything that determines the output."""
        description = {"estimator": type(self).__name__, "features_version": FEATURES_VERSION,
                       "keys": KEY_SCHEME, **self._identity(backbone, execution)}
        text = json.dumps(description, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32], description

    @property
    def _n_features_out(self) -> int:
        return int(self.n_features_out_)

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

    def __sklearn_tags__(self) -> Any:
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
