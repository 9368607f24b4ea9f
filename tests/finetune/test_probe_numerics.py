"""The probe's head must be one gradient descent can train: a feature that is all but
constant (MiniLM has dimensions of 1e-32) must not fold an enormous weight into the head;
and a gradient that overflows stops training with an error, never a silent no-op."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CNN
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from sktransfer import TrainingDivergedError
from sktransfer.finetune import FineTunedImageClassifier, FineTunedTextClassifier
from sktransfer.finetune.probe import logistic_probe, ridge_probe
from sktransfer.finetune.targets import ClassTargets


def features_with_a_dead_dimension(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    x[:, 5] = rng.normal(size=n) * 1e-32  # values 1e-32: a dimension the model never uses
    return x, y


def test_a_feature_of_negligible_spread_folds_no_enormous_weight():
    x, y = features_with_a_dead_dimension()
    coef, intercept, C = logistic_probe(x[:100], y[:100], x[100:], y[100:], None)
    assert np.abs(coef).max() < 1e3 and np.isfinite(intercept).all()
    # the same decision function as a probe that never saw the dead dimension, if standardised
    scaler = StandardScaler().fit(x[:100, :5])
    reference = LogisticRegression(C=C, max_iter=3000).fit(scaler.transform(x[:100, :5]),
                                                            y[:100])
    ours = x[100:] @ coef.T + intercept
    theirs = reference.decision_function(scaler.transform(x[100:, :5]))
    raw = LogisticRegression(C=C, max_iter=3000).fit(x[:100, :5], y[:100])
    assert (np.allclose(ours.ravel(), theirs, atol=1e-4)
            or np.allclose(ours.ravel(), raw.decision_function(x[100:, :5]), atol=1e-4))
    coef, _, _ = ridge_probe(x[:100], (x[:100, 0:1] - x[:100, 0:1].mean()))
    assert np.abs(coef).max() < 1e3


def test_minilm_fine_tuning_trains_its_head_from_the_probe():
    """MiniLM's embedding has dimensions of 1e-32: the head folded from a standardised probe
    had weights of 1e31, and every update was clipped to nothing."""
    texts = ["a wonderful film", "a moving, tender story", "brilliant and funny",
             "dull and slow", "a tedious mess", "far too long"] * 6
    y = [1, 1, 1, 0, 0, 0] * 6
    clf = FineTunedTextClassifier(max_epochs=0, random_state=0).fit(texts, y)
    probe_head = clf.net_.head.weight.detach().clone()
    assert probe_head.abs().max() < 1e3
    tuned = FineTunedTextClassifier(max_epochs=1, unfreeze_depth=0, guard=None,
                                    random_state=0).fit(texts, y)
    # probe fitted on the training split, then trained: it moved
    assert not torch.equal(tuned.net_.head.weight, probe_head)


def test_an_overflowing_gradient_stops_training_with_an_error(monkeypatch):
    real = ClassTargets.fit_probe

    def enormous(self, weight, bias, *args):
        said = real(self, weight, bias, *args)
        with torch.no_grad():
            weight.mul_(1e31)  # the head the unscaled dead dimension used to give
        return said

    monkeypatch.setattr(ClassTargets, "fit_probe", enormous)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(TrainingDivergedError, match="gradient norm became"):
        FineTunedImageClassifier(TINY_CNN, weights="random", max_epochs=2, random_state=0,
                                 batch_size=16).fit(X, np.arange(48) % 2)
