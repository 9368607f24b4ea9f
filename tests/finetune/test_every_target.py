"""Every kind of target on tiny models: real values, several labels per row, several columns
of classes, several tasks at once with missing labels; and every bad target named before any
training."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_CNN

from sktransfer.finetune import (
    FineTunedImageClassifier,
    FineTunedImageEmbedder,
    FineTunedImageRegressor,
    FineTunedTextRegressor,
)
from sktransfer.finetune.targets import MIN_TASK_SCALE, ClassTargets, TaskTargets, ValueTargets
from sktransfer.finetune.training import TrainingRun

TINY = dict(weights="random", random_state=0, batch_size=16)


def bright_and_red(n=48, seed=0):
    """Images whose brightness is a real value and whose red channel is a class."""
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(0.2, 1.0, n)
    X = (rng.random((n, 32, 32, 3)) * 200 * brightness[:, None, None, None]).astype(np.uint8)
    red = np.arange(n) % 2
    X[red == 1, :, :, 0] = 255
    return X, brightness, red


# ---- real values ----------------------------------------------------------------------------
def test_the_regressor_starts_from_the_ridge_probe_and_predicts_in_the_units_of_y():
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sktransfer import ImageEmbedder
    from sktransfer.finetune.probe import RIDGE_ALPHAS

    X, brightness, _ = bright_and_red()
    price = 1000.0 + 500.0 * brightness  # far from standardised units
    reg = FineTunedImageRegressor(TINY_CNN, max_epochs=0, precision="float32",
                                  **TINY).fit(X, price)
    assert reg.best_epoch_ == 0 and reg.n_outputs_ == 1
    features = ImageEmbedder(TINY_CNN, weights="random", backend="torch", precision="float32",
                             decode="full", device="cpu").fit_transform(X)
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS)).fit(features, price)
    np.testing.assert_allclose(reg.predict(X), ridge.predict(features), rtol=1e-4)
    assert reg.predict(X).ndim == 1 and reg.score(X, price) > 0.8


def test_regression_trains_epochs_scores_them_and_takes_a_scorer():
    X, brightness, _ = bright_and_red()
    reg = FineTunedImageRegressor(TINY_CNN, max_epochs=2, **TINY).fit(X, brightness)
    assert [h["epoch"] for h in reg.history_] == [0, 1, 2]
    assert all(h["val_score"] == -h["val_mse"] and np.isfinite(h["val_r2"])
               for h in reg.history_)
    by_r2 = FineTunedImageRegressor(TINY_CNN, max_epochs=1, scoring="r2", **TINY).fit(
        X, brightness)
    assert [h["val_score"] for h in by_r2.history_] == pytest.approx(
        [h["val_r2"] for h in by_r2.history_])


def test_multi_output_regression_gives_one_column_per_output():
    X, brightness, red = bright_and_red()
    y = np.column_stack([brightness, 10.0 * red + brightness])
    reg = FineTunedImageRegressor(TINY_CNN, max_epochs=1, **TINY).fit(X, y)
    assert reg.n_outputs_ == 2 and reg.predict(X[:5]).shape == (5, 2)
    frame = pd.DataFrame(y, columns=["brightness", "score"])
    assert FineTunedImageRegressor(TINY_CNN, max_epochs=0, **TINY).fit(
        X, frame).predict(X[:2]).shape == (2, 2)


def test_the_text_regressor_learns_a_rating():
    reviews = ["a wonderful film", "a moving, tender story", "brilliant and funny",
               "dull and slow", "a tedious mess", "far too long"] * 4
    stars = np.array([5.0, 4.5, 4.0, 2.0, 1.0, 1.5] * 4)
    reg = FineTunedTextRegressor(max_epochs=1, random_state=0).fit(reviews, stars)
    predicted = reg.predict(["a wonderful, tender film", "a slow, tedious mess"])
    assert predicted[0] > 3.5 > predicted[1]


# ---- several labels per row, several columns of classes -------------------------------------
def test_a_label_indicator_is_multi_label_with_one_sigmoid_per_label():
    X, brightness, red = bright_and_red()
    y = np.column_stack([red, (brightness > 0.6).astype(int)])
    clf = FineTunedImageClassifier(TINY_CNN, max_epochs=1, **TINY).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2) and not np.allclose(proba.sum(axis=1), 1.0)
    assert clf.classes_.tolist() == [0, 1]
    assert set(np.unique(clf.predict(X))) <= {0, 1} and clf.predict(X).shape == y.shape
    assert (clf.predict(X)[:, 0] == red).mean() > 0.9


def test_columns_of_classes_are_multiclass_multioutput():
    X, brightness, red = bright_and_red()
    y = np.column_stack([np.where(red == 1, "red", "plain"),
                         np.digitize(brightness, [0.45, 0.7]).astype(str)])
    clf = FineTunedImageClassifier(TINY_CNN, max_epochs=1, **TINY).fit(X, y)
    assert [c.tolist() for c in clf.classes_] == [["plain", "red"], ["0", "1", "2"]]
    proba = clf.predict_proba(X[:4])
    assert [p.shape for p in proba] == [(4, 2), (4, 3)]
    assert all(np.allclose(p.sum(axis=1), 1.0) for p in proba)
    assert clf.predict(X[:4]).shape == (4, 2) and clf.tasks_ == {
        "0": "classification", "1": "classification"}


# ---- several tasks at once ------------------------------------------------------------------
def test_a_multitask_embedder_learns_a_class_and_a_value_with_missing_labels(capsys):
    X, brightness, red = bright_and_red(64)
    y = pd.DataFrame({"red": np.where(red == 1, "yes", "no"), "brightness": brightness})
    y.loc[::3, "brightness"] = np.nan  # a third of the rows lack the value
    y.loc[1::5, "red"] = None
    embedder = FineTunedImageEmbedder(TINY_CNN, max_epochs=2, progress=True, **TINY)
    features = embedder.fit_transform(X, y)
    assert embedder.tasks_ == {"red": "classification", "brightness": "regression"}
    assert "tasks: red (classification), brightness (regression)" in capsys.readouterr().out
    assert features.shape == (64, 256) and np.isfinite(features).all()
    per_task = [h["val_tasks"] for h in embedder.history_]
    assert all(set(tasks) == {"red", "brightness"} for tasks in per_task)
    assert all(np.isfinite(tasks["brightness"]["val_mse"]) for tasks in per_task)
    # epoch 0 sets each task's scale (its loss, at least MIN_TASK_SCALE: the red channel is
    # solved by the probe already): the normalised losses, averaged, are the validation loss
    first = embedder.history_[0]
    losses = [first["val_tasks"][name]["loss"] for name in ("red", "brightness")]
    assert first["val_loss"] == pytest.approx(np.mean(
        [loss / max(loss, MIN_TASK_SCALE) for loss in losses]))
    # what the features are worth downstream: the class and the value are both in them
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    known = y["brightness"].notna().to_numpy()
    assert LogisticRegression(max_iter=2000).fit(features, red).score(features, red) > 0.9
    ridge = make_pipeline(StandardScaler(), RidgeCV()).fit(features[known], brightness[known])
    assert ridge.score(features[known], brightness[known]) > 0.5


def test_task_kinds_can_be_given_and_weights_override_the_balance():
    X, brightness, red = bright_and_red()
    y = np.column_stack([red, np.round(brightness * 4)])  # both look like classes
    embedder = FineTunedImageEmbedder(TINY_CNN, max_epochs=1, tasks={"1": "regression"},
                                      task_weights={"0": 0.0}, **TINY).fit(X, y)
    assert embedder.tasks_ == {"0": "classification", "1": "regression"}


def test_missing_labels_are_masked_out_of_the_loss_and_its_gradient():
    """A row without a task's label contributes nothing to that task: its placeholders
    (NaN for a value, -1 for a class) would make the loss NaN or raise if they were used."""
    y = pd.DataFrame({"kind": ["a", "b", None, "a", "b", "a"],
                      "size": [1.5, np.nan, 3.25, 4.75, np.nan, 2.5]})
    targets = TaskTargets.from_columns(y)
    outputs = torch.randn(6, targets.n_outputs, requires_grad=True)
    rows = np.arange(6)
    loss = targets.loss(outputs, rows)
    assert torch.isfinite(loss)
    loss.backward()
    kind, size = targets.tasks
    grad = outputs.grad.numpy()
    assert not grad[2, kind.start:kind.stop].any()  # row 2 has no kind
    assert not grad[[1, 4], size.start:size.stop].any()  # rows 1 and 4 have no size
    assert grad[0].all()
    expected = (torch.nn.functional.cross_entropy(
        outputs[[0, 1, 3, 4, 5], kind.start:kind.stop], torch.tensor([0, 1, 0, 1, 0]))
        + torch.nn.functional.mse_loss(
            outputs[[0, 2, 3, 5], size.start:size.stop],
            torch.as_tensor(size.targets.standardized[[0, 2, 3, 5]], dtype=torch.float32)))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_tasks_are_balanced_by_their_epoch_zero_validation_loss():
    y = pd.DataFrame({"kind": ["a", "b"] * 10, "price": np.linspace(100.0, 900.0, 20)})
    targets = TaskTargets.from_columns(y)
    rows = np.arange(20)
    outputs = np.random.default_rng(0).normal(size=(20, targets.n_outputs))
    first = targets.validate(outputs, rows, None)  # epoch 0: sets the scales
    assert first.loss == pytest.approx(1.0)
    assert targets.scales.tolist() == pytest.approx(
        [first.record["val_tasks"][name]["loss"] for name in ("kind", "price")])
    later = targets.validate(outputs * 0.5, rows, None)
    assert later.loss == pytest.approx(np.mean([
        later.record["val_tasks"][name]["loss"] / scale
        for name, scale in zip(("kind", "price"), targets.scales, strict=True)]))


def test_cross_fitting_returns_out_of_fold_features():
    X, _, red = bright_and_red(48)
    # guard=None: each fold's network is trained (a guard could keep every fold's probe,
    # whose features are the frozen ones, the same in and out of fold)
    embedder = FineTunedImageEmbedder(TINY_CNN, max_epochs=1, cv=3, guard=None, **TINY)
    out_of_fold = embedder.fit_transform(X, red)
    assert out_of_fold.shape == (48, 256)
    in_fold = embedder.transform(X)  # the network fitted on every row
    assert not np.allclose(out_of_fold, in_fold)
    plain = FineTunedImageEmbedder(TINY_CNN, max_epochs=1, guard=None, **TINY)
    np.testing.assert_allclose(plain.fit_transform(X, red), in_fold, atol=1e-5)


def test_every_kind_pickles_and_predicts_the_same_in_a_fresh_process(tmp_path):
    X, brightness, red = bright_and_red(40)
    models = {
        "regressor": FineTunedImageRegressor(TINY_CNN, max_epochs=1, **TINY).fit(
            X, np.column_stack([brightness, red + brightness])),
        "labels": FineTunedImageClassifier(TINY_CNN, max_epochs=1, **TINY).fit(
            X, np.column_stack([red, 1 - red])),
        "tasks": FineTunedImageEmbedder(TINY_CNN, max_epochs=1, **TINY).fit(
            X, pd.DataFrame({"red": red, "brightness": brightness})),
    }
    np.save(tmp_path / "X.npy", X)
    for name, model in models.items():
        out = model.transform(X) if name == "tasks" else model.predict(X)
        (tmp_path / f"{name}.pkl").write_bytes(pickle.dumps(model))
        np.save(tmp_path / f"{name}.npy", out)
        again = pickle.loads((tmp_path / f"{name}.pkl").read_bytes())
        np.testing.assert_array_equal(again.transform(X) if name == "tasks"
                                      else again.predict(X), out)  # the same process
    script = textwrap.dedent(f"""
        import pickle, numpy as np
        X = np.load({str(tmp_path / 'X.npy')!r})
        for name in ("regressor", "labels", "tasks"):
            model = pickle.loads(open(f"{tmp_path}/{{name}}.pkl", "rb").read())
            out = model.transform(X) if name == "tasks" else model.predict(X)
            # another process may run on more threads: the same up to float rounding
            np.testing.assert_allclose(out, np.load(f"{tmp_path}/{{name}}.npy"), rtol=1e-5,
                                       atol=1e-6)
        print("same")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 0 and "same" in result.stdout, result.stderr


# ---- bad targets, named before any training -------------------------------------------------
BAD = [
    (FineTunedImageRegressor, np.r_[np.ones(19), np.nan],
     r"y row 19: nan is not a finite number"),
    (FineTunedImageRegressor, pd.DataFrame({"price": np.r_[np.arange(19.0), np.inf]}),
     r"y column 'price' row 19: inf is not a finite number"),
    (FineTunedImageRegressor, np.array(["cheap", "dear"] * 10, dtype=object),
     r"y row 0: 'cheap' is a text, not a number: FineTunedImageRegressor learns real values; "
     r"FineTunedImageClassifier learns classes, and FineTunedImageEmbedder learns tasks of "
     r"both kinds"),
    (FineTunedImageRegressor, pd.DataFrame({"a": np.arange(20.0), "b": np.full(20, 3.0)}),
     r"y column 'b' is 3 in every labelled row"),
    (FineTunedImageRegressor, np.arange(19.0), r"X has 20 samples but y has 19 rows"),
    (FineTunedImageEmbedder, pd.DataFrame({"kind": ["a"] * 19 + ["b"],
                                           "v": np.linspace(0, 1, 20)}),
     r"y column 'kind': class 'b' has 1 labelled row"),
    (FineTunedImageEmbedder, pd.DataFrame({"kind": ["a", "b"] * 10, "v": [None] * 20}),
     r"y column 'v' has no labels at all"),
    (FineTunedImageClassifier, np.column_stack([np.arange(20) % 2, np.linspace(0, 1, 20)]),
     r"y column '1' holds real values: FineTunedImageClassifier learns classes; "
     r"FineTunedImageRegressor learns real values, and FineTunedImageEmbedder"),
    (FineTunedImageClassifier, np.column_stack([np.arange(20) % 2, [None] + [1] * 19]),
     r"y column '1' row 0: None is a missing label"),
]


@pytest.mark.parametrize(("estimator", "y", "message"), BAD)
def test_bad_targets_are_named_before_any_training(estimator, y, message, monkeypatch):
    X, _, _ = bright_and_red(20)
    trained = []
    monkeypatch.setattr(TrainingRun, "fit", lambda *a, **k: trained.append(1))
    with pytest.raises(ValueError, match=message):
        estimator(TINY_CNN, max_epochs=1, **TINY).fit(X, y)
    assert trained == []


@pytest.mark.parametrize(("params", "message"), [
    ({"tasks": {"colour": "classification"}}, r"tasks names column 'colour', which y does not"),
    ({"tasks": {"kind": "ranking"}}, r"tasks\['kind'\] = 'ranking': a task is"),
    ({"task_weights": {"v": -1.0}}, r"task_weights\['v'\] = -1.0: a task weight is a finite"),
    ({"task_weights": {"v": float("nan")}}, r"task_weights\['v'\] = nan"),
    ({"task_weights": {"w": 1.0}}, r"task_weights names column 'w'"),
])
def test_bad_task_settings_are_named(params, message):
    X, _, _ = bright_and_red(20)
    y = pd.DataFrame({"kind": ["a", "b"] * 10, "v": np.linspace(0, 1, 20)})
    with pytest.raises(ValueError, match=message):
        FineTunedImageEmbedder(TINY_CNN, max_epochs=1, **params, **TINY).fit(X, y)


def test_the_kinds_are_inferred_as_type_of_target_says():
    from sktransfer.finetune.targets import infer_kind

    assert infer_kind(np.array([0.5, 1.5, 2.25])) == "regression"
    assert infer_kind(np.array([1, 2, 3])) == "classification"
    assert infer_kind(np.array(["a", "b", None], dtype=object)) == "classification"
    assert infer_kind(np.array([True, False])) == "classification"
    assert infer_kind(pd.Series(["x", "y"], dtype="category")) == "classification"
    assert infer_kind(np.array([0.5, np.nan, 2.0])) == "regression"


def test_value_and_class_targets_decode_what_they_encoded():
    values = ValueTargets.from_values(np.array([10.0, 20.0, 30.0, 40.0]))
    np.testing.assert_allclose(values.decode(values.standardized), [10.0, 20.0, 30.0, 40.0])
    classes = ClassTargets.from_labels(["b", "a", "b"])
    assert classes.classes.tolist() == ["a", "b"] and classes.encoded.tolist() == [1, 0, 1]


def test_confident_labels_give_a_finite_validation_loss():
    # float32 logits of ±40: a sigmoid of exactly 1.0 in float32, where a clipped log gave
    # inf * 0 = NaN and the epoch selection compared NaNs
    from sktransfer.finetune.targets import LabelTargets

    targets = LabelTargets.from_indicator(np.array([[1, 0], [0, 1], [1, 1], [0, 0]]))
    outputs = np.array([[40, -40], [-40, 40], [40, -40], [-40, -40]], dtype=np.float32)
    validation = targets.validate(outputs, np.arange(4), None)
    # seven of eight labels right with certainty, one wrong by a logit of 40: 40 / 8 = 5
    assert np.isfinite(validation.loss) and validation.loss == pytest.approx(40 / 8, rel=1e-6)
    assert validation.record["val_label_accuracy"] == pytest.approx(7 / 8)


def test_every_snippet_of_the_multitask_corpus_has_a_text():
    # 14 synopses of the shipped file have none: a multitask benchmark on 2,000 snippets
    # drew one and failed at row 77 ("missing text") before they were left out
    from sktransfer.datasets import load_rotten_tomatoes

    data = load_rotten_tomatoes(plots=True)
    assert all(isinstance(text, str) and text for text in data.text)
    assert int((data.is_review == 0).sum()) == 1083
    assert np.isnan(data.target[data.is_review == 0]).all()
