"""domain_shift: how far is the target data from the source, in the embedding space?"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import HasMethods, Interval, validate_params


@dataclass
class DomainShift:
    """Result of :func:`domain_shift`.

    Attributes
    ----------
    auc : float
        Cross-validated ROC AUC of a classifier telling source from target (0.5: it cannot).
    proxy_a_distance : float
        2 (1 − 2 ε) with ε the classifier's balanced error, clipped to [0, 2].
    mmd2 : float
        Unbiased squared maximum mean discrepancy (Gaussian kernel, median bandwidth).
    p_value : float
        Permutation p-value of ``mmd2`` under "both samples come from one distribution".
    n_source, n_target : int
        Samples used (after subsampling to ``max_samples``).
    reading : str
        The numbers in plain words.
    """

    auc: float
    proxy_a_distance: float
    mmd2: float
    p_value: float
    n_source: int
    n_target: int
    reading: str

    def __str__(self) -> str:
        return (f"domain classifier AUC {self.auc:.3f}, proxy A-distance "
                f"{self.proxy_a_distance:.3f}, MMD² {self.mmd2:.4f} (permutation p = "
                f"{self.p_value:.3g}); {self.reading}")


@validate_params(
    {"X_source": ["array-like"], "X_target": ["array-like"],
     "embedder": [None, HasMethods(["fit", "transform"])],
     "n_permutations": [Interval(Integral, 1, None, closed="left")],
     "max_samples": [Interval(Integral, 2, None, closed="left")],
     "cv": [Interval(Integral, 2, None, closed="left")],
     "random_state": [Interval(Integral, 0, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def domain_shift(X_source: Any, X_target: Any, embedder: Any = None, *, n_permutations: int = 500,
                 max_samples: int = 1000, cv: int = 5, random_state: int = 0) -> DomainShift:
    """Measure the shift between two datasets in an embedding space.

    Parameters
    ----------
    X_source, X_target : samples
        Images or texts (with ``embedder``), or feature matrices (without).
    embedder : ImageEmbedder, TextEmbedder or None
        Embeds both datasets with the same fitted model; None when X are already features.
    n_permutations : int, default=500
        Permutations for the MMD p-value (resolution 1 / (n_permutations + 1)).
    max_samples : int, default=1000
        Each dataset is subsampled to at most this many rows (the kernel is quadratic).
    cv : int, default=5
        Folds for the domain classifier.
    random_state : int, default=0

    Returns
    -------
    shift : DomainShift

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.diagnostics import domain_shift
    >>> rng = np.random.default_rng(0)
    >>> same = domain_shift(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)))
    >>> bool(same.auc < 0.6 and same.p_value > 0.05)
    True
    >>> moved = domain_shift(rng.normal(size=(200, 5)), rng.normal(2.0, size=(200, 5)))
    >>> bool(moved.auc > 0.95 and moved.p_value < 0.01)
    True
    """
    rng = np.random.default_rng(random_state)
    if embedder is not None:
        fitted = clone(embedder).fit(X_source)
        source, target = fitted.transform(X_source), fitted.transform(X_target)
    else:
        source, target = np.asarray(X_source, dtype=float), np.asarray(X_target, dtype=float)
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"feature matrices do not match: {source.shape} and {target.shape}")
    source = _subsample(source, max_samples, rng)
    target = _subsample(target, max_samples, rng)
    if min(len(source), len(target)) < cv:
        raise ValueError(f"each dataset needs at least cv={cv} samples")
    features = np.vstack([source, target]).astype(np.float64)
    domain = np.r_[np.zeros(len(source), dtype=int), np.ones(len(target), dtype=int)]

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    folds = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    proba = cross_val_predict(classifier, features, domain, cv=folds, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(domain, proba))
    error = 1.0 - balanced_accuracy_score(domain, proba > 0.5)
    pad = float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0))

    mmd2, p_value = mmd_permutation_test(features, len(source), n_permutations, rng)
    return DomainShift(auc=auc, proxy_a_distance=pad, mmd2=mmd2, p_value=p_value,
                       n_source=len(source), n_target=len(target),
                       reading=_reading(auc, p_value))


def _subsample(features: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(features) <= limit:
        return features
    return features[np.sort(rng.choice(len(features), size=limit, replace=False))]


def mmd_permutation_test(features: np.ndarray, n_source: int, n_permutations: int,
                         rng: np.random.Generator) -> tuple[float, float]:
    """Unbiased MMD² between the first ``n_source`` rows and the rest, and its p-value.

    Gaussian kernel with the median heuristic. All permutations are evaluated together as two
    matrix products with the kernel matrix.
    """
    squared = euclidean_distances(features, squared=True)
    off_diagonal = squared[~np.eye(len(squared), dtype=bool)]
    median = np.median(off_diagonal[off_diagonal > 0]) if (off_diagonal > 0).any() else 1.0
    kernel = np.exp(-squared / median)
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimator leaves out i == j
    n, m = n_source, len(features) - n_source

    labels = np.zeros((len(features), n_permutations + 1))
    labels[:n, 0] = 1.0  # column 0: the observed split
    for column in range(1, n_permutations + 1):
        labels[rng.permutation(len(features))[:n], column] = 1.0
    others = 1.0 - labels
    within_source = np.einsum("ip,ip->p", labels, kernel @ labels)
    within_target = np.einsum("ip,ip->p", others, kernel @ others)
    between = np.einsum("ip,ip->p", labels, kernel @ others)
    mmd2 = within_source / (n * (n - 1)) + within_target / (m * (m - 1)) - 2 * between / (n * m)
    p_value = (1 + np.sum(mmd2[1:] >= mmd2[0])) / (1 + n_permutations)
    return float(mmd2[0]), float(p_value)


def _reading(auc: float, p_value: float) -> str:
    if auc < 0.6:
        strength = "the two datasets are hard to tell apart: little or no shift"
    elif auc < 0.8:
        strength = "a moderate shift: the datasets differ in ways the model sees"
    else:
        strength = ("a strong shift: the datasets are easy to tell apart, so features learnt "
                    "on one may transfer poorly to the other")
    test = ("the MMD test finds the difference significant" if p_value < 0.05
            else "the MMD test finds no significant difference")
    return f"{strength}; {test} (p = {p_value:.3g})."
