"""What the diagnostics share: default heads, splits computed once, fold scores."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import get_scorer
from sklearn.model_selection import check_cv
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import _safe_indexing
from sklearn.utils.multiclass import type_of_target


def is_classification(y: Any) -> bool:
    return type_of_target(y) in ("binary", "multiclass")


def default_head(y: Any) -> Any:
    """The model trained on top of every feature set: scaled logistic or ridge regression.

    The scaler does not centre, so it also takes sparse TF-IDF matrices.
    """
    if is_classification(y):
        return make_pipeline(StandardScaler(with_mean=False),
                             LogisticRegression(C=0.1, max_iter=3000))
    return make_pipeline(StandardScaler(with_mean=False), Ridge(alpha=1.0))


def default_scoring(y: Any) -> str:
    return "balanced_accuracy" if is_classification(y) else "r2"


def fixed_splits(X: Any, y: Any, cv: Any, groups: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds every model is scored on, computed once so that comparisons are paired."""
    splitter = check_cv(cv, y, classifier=is_classification(y))
    return list(splitter.split(_placeholder(X), y, groups))


def _placeholder(X: Any) -> np.ndarray:
    return np.zeros((len(X), 1)) if not hasattr(X, "shape") else X


def fold_scores(model: Any, X: Any, y: Any, splits: list, head: Any, scoring: str
                ) -> tuple[np.ndarray, float]:
    """Score ``model`` on each split; returns (scores, seconds).

    ``model=None``: X already holds features, the head alone is scored. A transformer that
    learns nothing in ``fit`` (frozen sktransfer embedders, the image baselines: they say so
    with ``learns_nothing = True``) transforms X once and only the head is cross-validated:
    the same numbers as a full pipeline per fold, without repeated embedding. Any other
    transformer runs in a pipeline with the head; a full estimator (with ``predict``) runs as
    it is.
    """
    start = time.perf_counter()
    scorer = get_scorer(scoring)
    y = np.asarray(y)
    if model is None:
        estimator, data = head, X
    elif getattr(model, "learns_nothing", False):
        features = clone(model).fit_transform(X)
        estimator, data = head, features
    elif hasattr(model, "predict"):
        estimator, data = model, X
    else:
        estimator, data = make_pipeline(model, head), X
    scores = []
    for train, test in splits:
        fitted = clone(estimator).fit(_safe_indexing(data, train), y[train])
        scores.append(scorer(fitted, _safe_indexing(data, test), y[test]))
    return np.asarray(scores, dtype=float), time.perf_counter() - start


def supervised_defaults(y: Any, head: Any, scoring: str | None) -> tuple[Any, str]:
    """The head and scoring to use when the caller gave None."""
    return (default_head(y) if head is None else head), (scoring or default_scoring(y))
