"""CORAL: correlation alignment of source features to a target domain."""

from __future__ import annotations

from numbers import Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data


class CORAL(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Align source features to the target domain's mean and covariance (Sun et al., 2016).

    ``fit`` learns, from labelled source features ``X`` and unlabelled ``X_target``, the linear
    map that whitens the source covariance and re-colours it with the target's:
    ``(x - mean_s) C_s^{-1/2} C_t^{1/2} + mean_t``. Transform the *source* training data with
    it, train a classifier, and apply the classifier to target data as they are.

    Parameters
    ----------
    reg : float, default=1.0
        Added to both covariances' diagonals, as a multiple of the average feature variance:
        the shrinkage of the original paper (where features have unit variance and the
        identity is added), here independent of the features' scale.

    Attributes
    ----------
    mean_source_, mean_target_ : ndarray of shape (n_features,)
    transform_matrix_ : ndarray of shape (n_features, n_features)

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.diagnostics import CORAL
    >>> rng = np.random.default_rng(0)
    >>> source = rng.normal(size=(500, 3))
    >>> target = source @ np.diag([3.0, 0.5, 1.0]) + 5.0
    >>> aligned = CORAL(reg=0.0).fit(source, X_target=target).transform(source)
    >>> bool(np.allclose(aligned.mean(axis=0), target.mean(axis=0)))
    True
    >>> np.round(aligned.std(axis=0) / target.std(axis=0), 2)
    array([1., 1., 1.])
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "reg": [Interval(Real, 0, None, closed="left")]}

    def __init__(self, reg: float = 1.0):
        self.reg = reg

    def fit(self, X: Any, y: Any = None, *, X_target: Any = None) -> CORAL:
        """Learn the alignment from source features ``X`` to ``X_target``."""
        self._validate_params()
        source = validate_data(self, X, dtype=np.float64)
        if X_target is None:
            raise ValueError("CORAL.fit needs the target domain's features: "
                             "fit(X_source, X_target=...)")
        target = validate_data(self, X_target, dtype=np.float64, reset=False)
        if len(source) < 2 or len(target) < 2:
            raise ValueError("CORAL needs at least 2 samples in each domain")
        self.mean_source_ = source.mean(axis=0)
        self.mean_target_ = target.mean(axis=0)
        cov_source = self._regularised_cov(source)
        cov_target = self._regularised_cov(target)
        self.transform_matrix_ = _matrix_power(cov_source, -0.5) @ _matrix_power(cov_target, 0.5)
        return self

    def _regularised_cov(self, X: np.ndarray) -> np.ndarray:
        cov = np.atleast_2d(np.cov(X, rowvar=False))
        scale = max(float(np.trace(cov)) / len(cov), np.finfo(float).tiny)
        return cov + self.reg * scale * np.eye(len(cov))

    def transform(self, X: Any) -> np.ndarray:
        """Map source-domain features into the target domain's statistics."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return (X - self.mean_source_) @ self.transform_matrix_ + self.mean_target_


def _matrix_power(matrix: np.ndarray, power: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    values = np.clip(values, np.finfo(float).eps * values.max(), None)
    return (vectors * values**power) @ vectors.T
