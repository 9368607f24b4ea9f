"""Fine-tuning mechanics on tiny models: phases, learning rates, early stopping, seeds, pickling."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_CNN
from sklearn.base import clone
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV

from sktransfer import InputError
from sktransfer.finetune import FineTunedImageClassifier, FineTunedTextClassifier
from sktransfer.finetune.targets import ClassTargets
from sktransfer.finetune.training import TrainingRun


def red_or_not(n=32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 200, (n, 32, 32, 3), dtype=np.uint8)
    y = np.arange(n) % 2
    X[y == 1, :, :, 0] = 255
    return X, y


def tiny(**params):
    defaults = dict(weights="random", max_epochs=4, random_state=0, batch_size=16)
    return FineTunedImageClassifier(TINY_CNN, **{**defaults, **params})


def test_head_first_then_groups_unfreeze_from_the_top_with_lower_rates():
    X, y = red_or_not()
    clf = tiny(max_epochs=5, head_epochs=2, lr=1e-2, backbone_lr_ratio=0.1, layer_decay=0.5,
               early_stopping=False).fit(X, y)
    unfrozen = [h["unfrozen_groups"] for h in clf.history_]
    assert unfrozen == [0, 0, 0, 1, 2, 3]  # epoch 0 is the linear probe
    lrs = [h["lrs"] for h in clf.history_]
    assert lrs[0] == [] and lrs[1] == [1e-2] and lrs[3] == pytest.approx([1e-2, 1e-3])
    assert lrs[5] == pytest.approx([1e-2, 1e-3, 5e-4, 2.5e-4])
    assert clf.n_layer_groups_ >= 3


def initial_module(clf):
    """The network ``clf.fit`` starts from: the backbone's trainable copy, seeded as fit does."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(clf.random_state or 0)
        return clf._trainable(2).module


def test_only_the_trainable_parameters_change():
    X, y = red_or_not()
    clf = tiny(max_epochs=1, head_epochs=1).fit(X, y)  # head only
    reference = initial_module(tiny(max_epochs=1))  # the same seeded initialisation
    trained = clf.net_.state_dict()
    changed = {name for name, value in reference.state_dict().items()
               if name in trained and not np.allclose(value.numpy(), trained[name].numpy())}
    assert changed and all(name.startswith("net.classifier") for name in changed), changed


def test_unfreeze_depth_caps_the_groups():
    X, y = red_or_not()
    clf = tiny(max_epochs=5, head_epochs=1, unfreeze_depth=2, early_stopping=False).fit(X, y)
    assert [h["unfrozen_groups"] for h in clf.history_] == [0, 0, 1, 2, 2, 2]
    probe = tiny(max_epochs=3, unfreeze_depth=0, early_stopping=False).fit(X, y)
    assert {h["unfrozen_groups"] for h in probe.history_} == {0}


def test_batchnorm_statistics_stay_frozen_by_default():
    X, y = red_or_not()
    # guard=None: the trained network is kept (a guard may keep the probe's statistics)
    frozen = tiny(max_epochs=3, head_epochs=0, guard=None).fit(X, y)
    trained = tiny(max_epochs=3, head_epochs=0, batchnorm="train", guard=None).fit(X, y)
    initial = initial_module(frozen).state_dict()
    means = [k for k in initial if k.endswith("running_mean")]
    assert all(np.allclose(initial[k].numpy(), frozen.net_.state_dict()[k].numpy())
               for k in means)
    assert any(not np.allclose(initial[k].numpy(), trained.net_.state_dict()[k].numpy())
               for k in means)


def test_early_stopping_restores_the_best_epoch():
    X, y = red_or_not(64)
    clf = tiny(max_epochs=8, lr=0.05, patience=2, head_init="random",
               early_stopping=True).fit(X, y)
    scores = [h["val_score"] for h in clf.history_]
    assert clf.best_score_ == scores[clf.best_epoch_] == max(scores[:clf.best_epoch_ + 1])
    assert len(scores) <= clf.best_epoch_ + 1 + clf.patience
    # the kept weights really are the best epoch's: rescoring the validation split agrees
    _, val = ClassTargets.from_labels(y).split(clf.validation_fraction, 0)
    assert -log_loss(y[val], clf.predict_proba(X[val])) == pytest.approx(
        clf.best_score_, rel=1e-4, abs=1e-5)


def test_without_early_stopping_or_guard_the_last_epoch_is_kept():
    X, y = red_or_not(64)
    clf = tiny(max_epochs=4, lr=0.05, early_stopping=False, guard=None).fit(X, y)
    assert clf.best_epoch_ == 4 and len(clf.history_) == 5
    _, val = ClassTargets.from_labels(y).split(clf.validation_fraction, 0)
    assert log_loss(y[val], clf.predict_proba(X[val])) == pytest.approx(
        clf.history_[-1]["val_log_loss"], rel=1e-4, abs=1e-5)


def test_a_seed_gives_identical_results():
    X, y = red_or_not()
    a, b = tiny().fit(X, y), tiny().fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert [h["train_loss"] for h in a.history_[1:]] == [h["train_loss"]
                                                         for h in b.history_[1:]]
    c = tiny(random_state=1).fit(X, y)  # another split, order and initialisation
    assert [h["train_loss"] for h in a.history_[1:]] != [h["train_loss"]
                                                         for h in c.history_[1:]]
    assert a.license_ == "none (random weights)"


def test_clone_pickle_and_a_fresh_process(tmp_path):
    X, y = red_or_not()
    clf = tiny(max_epochs=2).fit(X, y)
    assert not hasattr(clone(clf), "net_") and clone(clf).get_params() == clf.get_params()
    blob = pickle.dumps(clf)
    from safetensors.torch import load

    stored = load(clf.__getstate__()["_net_safetensors"])  # the weights travel as safetensors
    assert stored.keys() == clf.net_.state_dict().keys()
    assert "net_" not in clf.__getstate__() and len(blob) < 5_000_000
    np.testing.assert_array_equal(pickle.loads(blob).predict_proba(X), clf.predict_proba(X))
    (tmp_path / "clf.pkl").write_bytes(blob)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", clf.predict_proba(X))
    script = textwrap.dedent(f"""
        import pickle, numpy as np
        clf = pickle.loads(open({str(tmp_path / 'clf.pkl')!r}, 'rb').read())
        out = clf.predict_proba(np.load({str(tmp_path / 'X.npy')!r}))
        np.testing.assert_array_equal(out, np.load({str(tmp_path / 'expected.npy')!r}))
        print("same")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 0 and "same" in result.stdout, result.stderr


def test_grid_search_over_learning_rate_and_depth():
    X, y = red_or_not(24)
    search = GridSearchCV(tiny(max_epochs=2), {"lr": [1e-3, 1e-2], "unfreeze_depth": [0, 2]},
                          cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_estimator_.predict(X[:2]).shape == (2,)


def test_labels_are_kept_as_given():
    X, _ = red_or_not()
    names = np.array(["ok", "defect"] * 16)
    clf = tiny(max_epochs=2).fit(X, names)
    assert list(clf.classes_) == ["defect", "ok"]
    assert set(clf.predict(X)) <= {"defect", "ok"}
    assert clf.predict_proba(X).shape == (32, 2)


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (red_or_not(10)[0], np.zeros(10), "one class"),
        (red_or_not(6)[0], np.array([0, 1, 0, 1, 0, 1]), "too few for validation_fraction"),
        (red_or_not(4)[0], np.array([0, 1, 0]), "4 samples but y has 3"),
    ],
)
def test_bad_labels_fail_before_training(X, y, message):
    with pytest.raises(ValueError, match=message):
        tiny().fit(X, y)


def test_undecodable_images_fail_before_training(bad_files, monkeypatch):
    X, y = red_or_not(20)
    items = list(X)
    items[7] = bad_files["truncated"]
    calls = []
    monkeypatch.setattr(TrainingRun, "train_epoch", lambda *a, **k: calls.append(1) or 0.0)
    monkeypatch.setattr(TrainingRun, "start", lambda *a, **k: calls.append(1) or (0.0, 0.0))
    with pytest.raises(InputError, match=r"row 7: .*truncated"):
        tiny().fit(items, y)
    assert calls == []


def test_progress_prints_each_epoch(capsys):
    X, y = red_or_not()
    tiny(max_epochs=2, progress=True, early_stopping=False).fit(X, y)
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "train loss" in out


def test_text_fine_tuning_unfreezes_encoder_layers():
    texts = ["a wonderful film", "a moving, tender story", "brilliant and funny",
             "dull and slow", "a tedious mess", "far too long"] * 4
    y = np.array([1, 1, 1, 0, 0, 0] * 4)
    clf = FineTunedTextClassifier(max_epochs=3, head_epochs=1, lr=5e-3, random_state=0,
                                  early_stopping=False).fit(texts, y)
    assert clf.n_layer_groups_ == 7  # word embeddings + 6 encoder layers
    assert [h["unfrozen_groups"] for h in clf.history_] == [0, 0, 1, 2]
    assert (clf.predict(texts) == y).mean() > 0.9
    with pytest.raises(InputError, match="row 1: missing text"):
        FineTunedTextClassifier(max_epochs=1).fit(["good", None, *texts[:10]],
                                                  [1, 0, *y[:10]])


def test_unpickling_builds_the_architecture_without_loading_pretrained_weights(monkeypatch):
    """The learned weights travel in the pickle: loading the pretrained ones again (a
    download, for a hub model) would be wasted, and impossible offline."""
    from sktransfer.backbones import BackboneSpec, _runtime, register_backbone
    from sktransfer.backbones.timm import _create

    loads = []
    state = _create(TINY_CNN).state_dict()
    register_backbone(BackboneSpec(name="counted-tiny", family="timm", license="MIT",
                                   load=lambda: loads.append(1) or state,
                                   architecture=TINY_CNN))
    X, y = red_or_not()
    clf = FineTunedImageClassifier("counted-tiny", max_epochs=1, random_state=0).fit(X, y)
    assert loads == [1]
    blob = pickle.dumps(clf)
    monkeypatch.setattr(_runtime, "_LOADED", {})  # as in a fresh process
    restored = pickle.loads(blob)
    np.testing.assert_array_equal(restored.predict_proba(X[:6]), clf.predict_proba(X[:6]))
    assert loads == [1]


def test_epoch_zero_is_the_logistic_regression_on_frozen_features():
    """The probe folded into the head predicts what scikit-learn's pipeline predicts on the
    same frozen features (kept, the probe is refitted on every row, as the baseline is)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sktransfer import ImageEmbedder

    X, y = red_or_not(40)
    clf = tiny(max_epochs=0, augment=False).fit(X, y)
    assert clf.best_epoch_ == 0 and len(clf.history_) == 1
    embedder = ImageEmbedder(TINY_CNN, weights="random", backend="torch", precision="float32",
                             decode="full", device="cpu")
    features = embedder.fit_transform(X)
    from sktransfer.finetune.probe import PROBE_CS

    expected = [make_pipeline(*scaler, LogisticRegression(C=C, max_iter=3000))
                .fit(features, y).predict_proba(features)
                for C in PROBE_CS for scaler in ([StandardScaler()], [])]
    clf._calibration = {}  # the probe itself, before its calibration on validation (T = 1)
    got = clf.predict_proba(X)
    assert min(np.abs(got - e).max() for e in expected) < 1e-3


def test_probabilities_are_calibrated_on_validation_by_a_temperature():
    from sktransfer.finetune.probe import calibrate

    logits = np.array([[4.0, -4.0], [3.0, -3.0], [-5.0, 5.0], [2.0, -2.0]])
    y = np.array([0, 1, 1, 0])  # one confident mistake: a high temperature is better
    temperature, proba, loss = calibrate(logits, y, None)
    assert temperature > 1 and loss < log_loss(y, np.exp(logits) / np.exp(logits).sum(1,
                                                                                 keepdims=True))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    X, y = red_or_not(40)
    clf = tiny(max_epochs=1).fit(X, y)
    assert clf.temperature_ == clf.history_[clf.best_epoch_]["temperature"]


def test_the_probe_is_class_weighted_and_no_epoch_collapses_on_imbalanced_data():
    rng = np.random.default_rng(3)
    X = rng.integers(0, 200, (60, 32, 32, 3), dtype=np.uint8)
    y = np.array([1] * 10 + [0] * 50)
    X[:10, :, :, 0] = np.minimum(X[:10, :, :, 0].astype(int) + 40, 255)  # a weak signal
    clf = tiny(max_epochs=2, class_weight="balanced", early_stopping=False).fit(X, y)
    assert all(record["val_predicted_classes"] == 2 for record in clf.history_)
    assert len(set(clf.predict(X))) == 2


def test_scoring_follows_scikit_learn():
    from sklearn.metrics import make_scorer, roc_auc_score

    X, y = red_or_not(40)
    auc = tiny(max_epochs=1, scoring="roc_auc").fit(X, y)
    assert all(0 <= record["val_score"] <= 1 for record in auc.history_)
    custom = tiny(max_epochs=1, scoring=make_scorer(roc_auc_score,
                                                    response_method="predict_proba")).fit(X, y)
    assert [r["val_score"] for r in custom.history_] == [r["val_score"] for r in auc.history_]
    with pytest.raises(ValueError, match="scoring"):
        tiny(scoring="no_such_scorer").fit(X, y)


def test_learning_rates_warm_up_from_each_groups_unfreezing_then_follow_a_cosine():
    schedule = tiny(max_epochs=4, warmup_epochs=1.0)._recipe("float32").schedule
    assert schedule(0.0) == pytest.approx(0.0, abs=2e-3)
    assert schedule(0.5) == pytest.approx(0.5 * 0.5 * (1 + np.cos(np.pi * 0.5 / 4)),
                                               rel=1e-2)
    assert schedule(1.0) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))
    assert schedule(2.25, start=2.0) == pytest.approx(
        0.25 * 0.5 * (1 + np.cos(np.pi * 2.25 / 4)), rel=1e-2)  # a group unfrozen at epoch 2
    assert schedule(4.0) == pytest.approx(0.0, abs=1e-12)
    assert tiny(warmup_epochs=0)._recipe("float32").schedule(0.0) == 1.0


def test_head_only_epochs_reuse_the_frozen_features_when_inputs_are_not_augmented(
        monkeypatch):
    """The frozen network runs once per row (for the probe), not once per epoch: counted at
    the network's own forward pass, which every path (embed, forward) goes through, so the
    count rises if any epoch recomputes the frozen layers."""
    from timm.models.efficientnet import EfficientNet

    X, y = red_or_not(32)
    rows = []
    real_forward = EfficientNet.forward_features

    def counted(self, x):
        if bool(x.any()):  # not the all-zero probe that checks the split at its groups
            rows.append(len(x))
        return real_forward(self, x)

    monkeypatch.setattr(EfficientNet, "forward_features", counted)
    # guard=None: the guard's mixes would add validation passes to the recomputing run
    reused = tiny(max_epochs=3, head_epochs=3, augment=False, guard=None).fit(X, y)
    assert sum(rows) == len(X)  # train and validation rows, each once
    rows.clear()
    recomputed = tiny(max_epochs=3, head_epochs=3, augment=False, guard=None)
    recomputed._reuse_frozen = False
    recomputed.fit(X, y)
    # the probe's pass, epoch 0's validation, then every epoch runs the whole network on
    # every row again ...
    n_val = math.ceil(recomputed.validation_fraction * len(X))
    assert sum(rows) == len(X) + n_val + 3 * len(X)
    np.testing.assert_allclose(reused.predict_proba(X), recomputed.predict_proba(X),
                               atol=1e-5)  # ... to the same result


def test_fine_tuned_image_embeddings_for_any_estimator():
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    from sktransfer.finetune import FineTunedImageEmbedder

    X, y = red_or_not(40)
    embedder = FineTunedImageEmbedder(TINY_CNN, weights="random", max_epochs=1, n_components=5,
                                      random_state=0, batch_size=16)
    scores = cross_val_score(make_pipeline(embedder, HistGradientBoostingClassifier()), X, y,
                             cv=2)  # fine-tuned on each training fold only
    assert scores.shape == (2,) and not hasattr(embedder, "net_")
    fitted = clone(embedder).fit(X, y)
    out = fitted.transform(X[:6])
    assert out.shape == (6, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, fitted.fit_transform(X, y)[:6], atol=1e-4)
    assert list(fitted.get_feature_names_out()) == [f"finetunedimageembedder{i}"
                                                    for i in range(5)]
    frame = clone(embedder).set_output(transform="pandas").fit(X, y).transform(X[:3])
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns[0] == "finetunedimageembedder0"
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).transform(X[:6]), out)
    full = clone(embedder).set_params(n_components=None).fit(X, y)
    assert full.transform(X[:2]).shape == (2, 256) and full.pca_ is None
    with pytest.raises(ValueError, match="requires y to be passed"):
        clone(embedder).fit(X)
    with pytest.raises(ValueError, match="n_components=500 exceeds"):
        clone(embedder).set_params(n_components=500).fit(X, y)


def test_fine_tuned_text_embeddings_are_the_fine_tuned_sentence_embeddings():
    from sktransfer.backbones._runtime import inference
    from sktransfer.finetune import FineTunedTextEmbedder

    texts = ["a wonderful film", "a moving, tender story", "brilliant and funny",
             "dull and slow", "a tedious mess", "far too long"] * 4
    y = np.array([1, 1, 1, 0, 0, 0] * 4)
    embedder = FineTunedTextEmbedder(max_epochs=1, random_state=0).fit(texts, y)
    out = embedder.transform(texts[:3])
    with inference("cpu", embedder.precision_):  # the precision it was fine-tuned at
        expected = embedder.net_.embed(texts[:3]).float().numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.shape == (3, 384) and embedder.n_features_out_ == 384
