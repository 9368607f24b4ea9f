"""The guard against negative transfer: where fine-tuning cannot help, the model kept is the
probe on frozen features, never worse; the rule it chooses by; the weight mixes it scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CNN
from sklearn.metrics import log_loss

from sktransfer.finetune import FineTunedImageClassifier
from sktransfer.finetune.targets import Validation
from sktransfer.finetune.training import MIXES, choose_mix, mixed

# a rate that makes a tiny network memorise its training rows within a few epochs
OVERFIT = dict(weights="random", random_state=0, batch_size=16, max_epochs=6, lr=3e-3)


def independent_labels(n=160, seed=0):
    """Images and labels drawn independently: nothing to learn, everything to overfit."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 2, n)


def test_where_fine_tuning_cannot_help_the_guard_keeps_the_probe():
    X, y = independent_labels()
    X_test, y_test = independent_labels(seed=1)
    probe = FineTunedImageClassifier(TINY_CNN, **{**OVERFIT, "max_epochs": 0}).fit(X, y)
    guarded = FineTunedImageClassifier(TINY_CNN, **OVERFIT).fit(X, y)  # guard="wise"
    unguarded = FineTunedImageClassifier(TINY_CNN, guard=None, **OVERFIT).fit(X, y)

    # without the guard the last epoch is kept: the network trained on noise
    assert unguarded.best_epoch_ == 6 and unguarded.mixing_ == 1.0
    train_loss = [record["train_loss"] for record in unguarded.history_[1:]]
    assert train_loss[-1] < train_loss[0]  # it did learn its training rows
    # with it, every mix was scored and the probe kept, refitted on every row as the
    # max_epochs=0 model is
    assert guarded.mixing_ == 0.0 and guarded.best_epoch_ == 0
    assert [(record["mixing"], record["kept"]) for record in guarded.guard_] == [
        (mix, mix == 0.0) for mix in MIXES]
    np.testing.assert_allclose(guarded.predict_proba(X_test), probe.predict_proba(X_test),
                               atol=1e-6)
    assert log_loss(y_test, guarded.predict_proba(X_test)) <= log_loss(
        y_test, probe.predict_proba(X_test)) + 1e-6


def test_the_probe_guard_scores_only_the_probe_and_the_kept_epoch():
    X, y = independent_labels()
    guarded = FineTunedImageClassifier(TINY_CNN, guard="probe", **OVERFIT).fit(X, y)
    assert [(record["mixing"], record["kept"]) for record in guarded.guard_] == [
        (0.0, True), (1.0, False)]
    assert guarded.mixing_ == 0.0 and guarded.best_epoch_ == 0


def test_a_mix_that_helps_is_kept_with_the_kept_epochs_number():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 200, (160, 32, 32, 3), dtype=np.uint8)
    y = np.arange(160) % 2
    for row in np.flatnonzero(y):  # a small white square anywhere: the random probe misses
        top, left = rng.integers(0, 28, 2)  # some, the trained network finds them all
        X[row, top:top + 4, left:left + 4] = 255
    clf = FineTunedImageClassifier(TINY_CNN, guard="wise", **OVERFIT).fit(X, y)
    losses = {record["mixing"]: record["val_loss"] for record in clf.guard_}
    assert sorted(losses) == list(MIXES)
    assert clf.mixing_ > 0 and clf.best_epoch_ == 6
    assert losses[clf.mixing_] == min(losses.values()) < losses[0.0]


def _validation(per_sample):
    per_sample = np.asarray(per_sample, dtype=float)
    return Validation(-per_sample.mean(), per_sample.mean(), per_sample, {})


def test_a_mix_is_chosen_only_when_it_beats_the_probe_beyond_the_noise():
    rng = np.random.default_rng(0)
    probe = rng.uniform(0.5, 1.0, 200)
    clear = {0.0: _validation(probe), 0.5: _validation(probe - 0.1),
             1.0: _validation(probe - 0.05)}
    assert choose_mix(clear, None) == 0.5
    # better on average by less than one standard error of the paired differences
    noise = rng.normal(0, 0.2, 200)
    within_noise = {0.0: _validation(probe), 1.0: _validation(probe + noise - noise.mean()
                                                               - 0.001)}
    assert choose_mix(within_noise, None) == 0.0
    # worse: the probe
    assert choose_mix({0.0: _validation(probe), 1.0: _validation(probe + 0.1)}, None) == 0.0
    # a scorer compares scores alone, as epochs are compared
    assert choose_mix(within_noise, "accuracy") == 1.0


def test_mixed_weights_interpolate_floats_and_keep_the_tuned_counters():
    probe = {"w": torch.zeros(3), "n": torch.tensor(1)}
    tuned = {"w": torch.full((3,), 4.0), "n": torch.tensor(7)}
    assert torch.equal(mixed(probe, tuned, 0.25)["w"], torch.ones(3))
    assert torch.equal(mixed(probe, tuned, 0.0)["w"], probe["w"])
    assert torch.equal(mixed(probe, tuned, 1.0)["w"], tuned["w"])
    assert int(mixed(probe, tuned, 0.25)["n"]) == 7


@pytest.mark.parametrize("guard", ["wise", "probe", None])
def test_the_guard_leaves_a_random_head_alone(guard):
    X, y = independent_labels(n=64)
    clf = FineTunedImageClassifier(TINY_CNN, head_init="random", guard=guard,
                                   **{**OVERFIT, "max_epochs": 1}).fit(X, y)
    assert clf.guard_ == [] and clf.mixing_ == 1.0
