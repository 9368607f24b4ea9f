"""The linear probes, fitted on frozen features, that start fine-tuning where the frozen
baseline ends (LP-FT, Kumar et al., 2022).

Classes are probed by scikit-learn's ``LogisticRegression`` on the features as they are or
standardised, whichever, with whichever ``C``, has the better cross-validated log-loss; real
values by ``RidgeCV`` on the features as they are or standardised, whichever has the lower
cross-validated squared error. A probe is folded into (its slice of) the
network's linear head, ``W = coef / scale`` and ``b = intercept - W @ mean``, so that the
head's outputs are the probe's decision function. Each kind of target
(:mod:`sktransfer.finetune.targets`) says which probe it needs and where it goes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import log_loss
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

PROBE_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
# a feature whose spread on the training rows is below this fraction of the widest feature's
# is constant there: MiniLM's sentence embedding has dimensions of 1e-32 and a spread of
# 6e-9 (next to 0.1), and scaling them to unit variance folded weights of 1e31 into the
# head, whose gradients then overflowed the clipping norm and zeroed every update.
NEGLIGIBLE_SPREAD = 1e-6


class _Scaler(StandardScaler):
    """``StandardScaler`` that leaves a feature of negligible spread (``NEGLIGIBLE_SPREAD``)
    unscaled, as it leaves an exactly constant one: centred, its values stay near 0 and its
    folded weight stays the probe's own."""

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> _Scaler:
        super().fit(X, y, sample_weight)
        negligible = self.scale_ < NEGLIGIBLE_SPREAD * self.scale_.max()
        self.scale_[negligible] = 1.0
        return self


def logistic_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                   val_y: np.ndarray, class_weights: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """The probe of one column of classes ``0..k-1``: a logistic regression on the training
    features, standardised or not and with the ``C`` that give the best 5-fold
    cross-validated log-loss (the validation split's, when a class has a single training
    sample), class-weighted as training is. Returns its decision function on the raw
    features, ``(coef, intercept, C)``: one row per class, or one row for two classes."""
    scaler = _Scaler().fit(train_x)
    balance = None if class_weights is None else dict(enumerate(class_weights.tolist()))
    n_splits = min(5, int(np.bincount(train_y).min()))
    if n_splits >= 2:  # cross-validation on the training split: steadier than the
        # validation split alone, which is small when the data are
        x, y = train_x, train_y
        folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=0).split(x, y))
    else:  # a class with one training sample: the validation split decides
        x, y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
        folds = [(np.arange(len(train_y)), np.arange(len(train_y), len(y)))]
    candidates = [(standardize, C) for standardize in (True, False) for C in PROBE_CS]
    losses = [_cv_loss(x, y, folds, standardize, C, balance, class_weights)
              for standardize, C in candidates]
    standardize, C = candidates[int(np.argmin(losses))]
    probe = LogisticRegression(C=C, max_iter=3000, class_weight=balance).fit(
        scaler.transform(train_x) if standardize else train_x, train_y)
    coef, intercept = _unscaled(probe.coef_, probe.intercept_,
                                scaler if standardize else None)
    return coef, intercept, C


RIDGE_ALPHAS = np.logspace(-3, 5, 17)


def ridge_probe(train_x: np.ndarray, train_y: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """The probe of real values (one column per output, already standardised): a ridge
    regression on the training features as they are or standardised, whichever has the
    lower 5-fold cross-validated squared error (the scaler fitted inside each fold), its
    penalty chosen among ``RIDGE_ALPHAS`` by efficient leave-one-out cross-validation
    (``RidgeCV``). Standardising can lose badly: a feature all but dead on the training rows
    (a ReLU that rarely fires) is scaled up a thousandfold on the rows where it does fire;
    on ELPV's defect probability that doubled the error on two folds of five. Returns the
    prediction function on the raw features, ``(coef, intercept, alpha)``, one row per
    output."""
    folds = KFold(min(5, len(train_x)), shuffle=True, random_state=0)
    errors = [-cross_val_score(_ridge(standardize), train_x, train_y, cv=folds,
                               scoring="neg_mean_squared_error").mean()
              for standardize in (False, True)]
    standardize = bool(np.argmin(errors))
    model = _ridge(standardize).fit(train_x, train_y)
    ridge = model[-1]
    coef, intercept = _unscaled(np.atleast_2d(ridge.coef_), np.atleast_1d(ridge.intercept_),
                                model[0] if standardize else None)
    return coef, intercept, float(ridge.alpha_)


def _ridge(standardize: bool) -> Pipeline:
    return make_pipeline(*([_Scaler()] if standardize else []),
                         RidgeCV(alphas=RIDGE_ALPHAS))


def _unscaled(coef: np.ndarray, intercept: np.ndarray, scaler: StandardScaler | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """A linear function of standardised features as one of the raw features:
    ``W = coef / scale`` and ``b = intercept - W @ mean``."""
    if scaler is None:
        return coef, intercept
    weight = coef / scaler.scale_
    return weight, intercept - weight @ scaler.mean_


def write_head(weight: Any, bias: Any, coef: np.ndarray, intercept: np.ndarray) -> None:
    """Copy a probe into (a slice of) the linear head: ``weight`` rows and ``bias``."""
    if tuple(weight.shape) != coef.shape:
        raise ValueError(f"the head is not one linear layer of {coef.shape[0]}×"
                         f"{coef.shape[1]} (got {tuple(weight.shape)}): use "
                         "head_init='random' for this model")
    with torch.no_grad():
        weight.copy_(torch.as_tensor(coef, dtype=weight.dtype))
        bias.copy_(torch.as_tensor(intercept, dtype=bias.dtype))


def linear_head(head: list[Any], n_outputs: int, n_features: int) -> tuple[Any, Any]:
    """The weight and bias of a head that is one linear layer of ``n_outputs`` ×
    ``n_features``, or a ValueError saying that the probe cannot start it."""
    weights = [p for p in head if p.ndim == 2]
    biases = [p for p in head if p.ndim == 1]
    if len(weights) != 1 or len(biases) != 1 or \
            tuple(weights[0].shape) != (n_outputs, n_features):
        raise ValueError(
            f"the head is not one linear layer of {n_outputs}×{n_features} "
            f"(got {[tuple(p.shape) for p in head]}): use head_init='random' for this model")
    return weights[0], biases[0]


def _cv_loss(x: np.ndarray, y: np.ndarray, folds: list[Any], standardize: bool, C: float,
             balance: dict[int, float] | None, class_weights: np.ndarray | None) -> float:
    """Mean held-out log-loss of one probe candidate, class-weighted as training is."""
    labels = np.arange(int(y.max()) + 1)
    losses = []
    for train, test in folds:
        scaler = _Scaler().fit(x[train]) if standardize else None
        fit_x, test_x = (scaler.transform(x[train]), scaler.transform(x[test])) if scaler \
            else (x[train], x[test])
        probe = LogisticRegression(C=C, max_iter=3000, class_weight=balance).fit(fit_x,
                                                                                 y[train])
        losses.append(log_loss(y[test], probe.predict_proba(test_x), labels=labels,
                               sample_weight=None if class_weights is None
                               else class_weights[y[test]]))
    return float(np.mean(losses))


TEMPERATURES = np.geomspace(0.05, 20.0, 81)


def calibrate(logits: np.ndarray, y: np.ndarray,
              weights: np.ndarray | None) -> tuple[float, np.ndarray, float]:
    """Temperature scaling (Guo et al., 2017): the ``T`` in a log-spaced grid from 0.05 to 20
    that minimises the (weighted) log-loss of ``softmax(logits / T)`` on validation, with
    those probabilities and that log-loss."""
    labels = np.arange(logits.shape[1])
    best = None
    for temperature in TEMPERATURES:
        scaled = logits / temperature
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        proba = np.exp(scaled)
        proba /= proba.sum(axis=1, keepdims=True)
        loss = log_loss(y, proba, labels=labels, sample_weight=weights)
        if best is None or loss < best[2]:
            best = (float(temperature), proba, float(loss))
    assert best is not None  # the grid is not empty
    return best
