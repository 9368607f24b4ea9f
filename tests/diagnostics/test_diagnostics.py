"""Diagnostics: each statistic against a case with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_CNN

from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer.diagnostics import (
    CORAL,
    ColorHistogram,
    DownsampledPixels,
    domain_shift,
    layer_sweep,
    transfer_report,
)
from sktransfer.diagnostics._report import corrected_paired_ttest, verdict


def test_domain_shift_identical_distributions():
    rng = np.random.default_rng(1)
    result = domain_shift(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)),
                          n_permutations=300)
    assert 0.4 < result.auc < 0.6
    assert result.p_value > 0.05
    assert result.proxy_a_distance < 0.3
    assert "little or no shift" in result.reading


def test_domain_shift_strong_shift():
    rng = np.random.default_rng(2)
    result = domain_shift(rng.normal(size=(300, 8)), rng.normal(1.5, 1.0, size=(300, 8)),
                          n_permutations=300)
    assert result.auc > 0.95 and result.proxy_a_distance > 1.5
    assert result.p_value == pytest.approx(1 / 301)
    assert "strong shift" in result.reading and "significant" in result.reading


def test_domain_shift_p_value_is_calibrated_under_the_null():
    rng = np.random.default_rng(3)
    p_values = [domain_shift(rng.normal(size=(40, 3)), rng.normal(size=(40, 3)),
                             n_permutations=99, random_state=i).p_value for i in range(40)]
    assert 0.05 <= np.mean(np.asarray(p_values) < 0.2) <= 0.4  # about 20 % below 0.2


def test_domain_shift_on_embeddings_of_real_photos(photos):
    rng = np.random.default_rng(0)
    crops = [p[y:y + 96, x:x + 96] for p in photos for y, x in rng.integers(0, 200, (12, 2))]
    dark = [(c * 0.25).astype(np.uint8) for c in crops]
    shift = domain_shift(crops, dark, ImageEmbedder(TINY_CNN, weights="random"),
                         n_permutations=200)
    assert shift.auc > 0.9 and shift.p_value < 0.01 and shift.n_source == 48


def test_coral_helps_on_a_constructed_shift():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    source = rng.normal(size=(n, 2)) + np.c_[3.0 * y, np.zeros(n)]
    y_target = rng.integers(0, 2, n)
    raw_target = rng.normal(size=(n, 2)) + np.c_[3.0 * y_target, np.zeros(n)]
    # the target domain sees the same classes with other gains and offsets per feature, as a
    # recalibrated sensor or another camera would: second-order statistics that CORAL aligns
    target = raw_target @ np.diag([3.0, 0.3]) + np.array([4.0, -3.0])
    plain = LogisticRegression().fit(source, y).score(target, y_target)
    coral = CORAL(reg=0.0).fit(source, X_target=target)
    aligned = LogisticRegression().fit(coral.transform(source), y).score(target, y_target)
    oracle = LogisticRegression().fit(target, y_target).score(target, y_target)  # ~Bayes rate
    assert plain < 0.7 and aligned > 0.9 and aligned > oracle - 0.02
    np.testing.assert_allclose(np.cov(coral.transform(source), rowvar=False),
                               np.cov(target, rowvar=False), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="X_target"):
        CORAL().fit(source)
    assert list(coral.get_feature_names_out()) == ["x0", "x1"]


def test_paired_test_and_verdict_rule():
    a = np.array([0.80, 0.82, 0.81, 0.79, 0.83])
    diff, p = corrected_paired_ttest(a, a - 0.1, 80, 20)
    assert diff == pytest.approx(0.1) and p == 0.0
    noisy = np.array([0.80, 0.70, 0.85, 0.72, 0.78])
    diff, p = corrected_paired_ttest(noisy, noisy[::-1] + 0.001, 80, 20)
    assert p > 0.5 and verdict(diff, p, alpha=0.05, margin=0.01) == "neutral"
    # corrected variance is larger than the naive one, so p is larger than the naive t-test
    from scipy import stats

    b = a + np.array([0.01, -0.02, 0.03, 0.0, 0.02])
    _, corrected = corrected_paired_ttest(b, a, 80, 20)
    assert corrected > stats.ttest_rel(b, a).pvalue


def test_transfer_report_finds_positive_neutral_and_negative_transfer():
    """Features that carry the label, features of pure noise, features worse than baseline."""
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    n = 300
    y = np.arange(n) % 2
    informative = np.c_[y + rng.normal(0, 0.6, n), rng.normal(size=(n, 4))]
    X = np.c_[informative, rng.normal(size=(n, 5))]
    report = transfer_report(
        X, y,
        candidates={
            "good": FunctionTransformer(lambda Z: Z[:, :5]),
            "baseline plus noise": FunctionTransformer(
                lambda Z: np.c_[Z[:, :1] * 0.55 + Z[:, 1:2], Z[:, 6:7]]),
            "noise": FunctionTransformer(lambda Z: Z[:, 5:]),
        },
        baselines={"weak": FunctionTransformer(lambda Z: Z[:, :1] * 0.55 + Z[:, 1:2])},
        cv=5,
    )
    table = report.table
    assert list(table["role"]) == ["candidate"] * 3 + ["baseline"]
    assert report.best_baseline == "weak"
    assert report.verdict("noise") == "negative"
    assert report.verdict("good") == "positive"
    assert report.verdict("baseline plus noise") == "neutral"
    assert table.loc["good", "mean"] > table.loc["weak", "mean"]
    assert set(report.fold_scores) == {"good", "baseline plus noise", "noise", "weak"}
    assert all(len(s) == 5 for s in report.fold_scores.values())


def test_transfer_report_auto_baselines_for_images_use_the_same_folds(monkeypatch):
    import sktransfer.diagnostics._report as report_module

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 2
    X[y == 1, :, :, 0] = 255  # red channel carries the label
    seen_splits = []
    real = report_module.fold_scores

    def spy(model, X, y, splits, head, scoring):
        seen_splits.append([tuple(test) for _, test in splits])
        return real(model, X, y, splits, head, scoring)

    monkeypatch.setattr(report_module, "fold_scores", spy)
    report = transfer_report(X, y, {"lite0": ImageEmbedder(layer=1)}, cv=4)
    assert list(report.table.index) == ["lite0", "raw pixels 32×32", "colour histogram",
                                        "lite0, random weights"]
    assert all(s == seen_splits[0] for s in seen_splits) and len(seen_splits) == 4
    assert report.table.loc["colour histogram", "mean"] > 0.95
    ax = report.plot()
    assert len(ax.patches) == 4


def test_transfer_report_on_text_uses_tfidf_and_groups():
    from sklearn.model_selection import GroupKFold

    texts = [f"{w} film {i}" for i in range(30) for w in ("great", "awful")]
    y = np.array([1, 0] * 30)
    groups = np.repeat(np.arange(30), 2)
    report = transfer_report(texts, y, {"MiniLM": TextEmbedder()}, cv=GroupKFold(3),
                             groups=groups)
    assert list(report.table.index) == ["MiniLM", "TF-IDF"]
    assert report.table["mean"].min() > 0.9
    assert "corrected resampled t-test" in report.rule


def test_layer_sweep_runs_the_backbone_once_per_batch(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    y = np.arange(24) % 2
    # Eager torch, where the passes can be counted (ONNX Runtime runs the same graph once per
    # batch too, out of reach of a Python spy).
    embedder = ImageEmbedder(TINY_CNN, weights="random", batch_size=8, backend="torch")
    backbone = embedder.fit(X[:1])._get_backbone()
    calls = []
    real = backbone.model.forward_intermediates

    def spy(*args, **kwargs):
        calls.append(kwargs["indices"])
        return real(*args, **kwargs)

    monkeypatch.setattr(backbone.model, "forward_intermediates", spy)
    sweep = layer_sweep(X, y, embedder, cv=3)
    assert calls == [[0, 1, 2, 3, 4]] * 3  # 24 images / batch 8: three passes, all layers each
    assert list(sweep.table["n_features"]) == [16, 24, 32, 48, 64, 256]
    single = ImageEmbedder(TINY_CNN, weights="random", layer=2).fit_transform(X)
    both = ImageEmbedder(TINY_CNN, weights="random", layer=[2, None]).fit_transform(X)
    np.testing.assert_allclose(both[:, :32], single, atol=1e-5)
    assert sweep.best_layer in (0, 1, 2, 3, 4, None)
    assert sweep.plot().get_xlabel().startswith("layer")


def test_image_baselines_name_bad_rows(bad_files):
    from sktransfer import InputError

    with pytest.raises(InputError, match="row 1"):
        DownsampledPixels().fit_transform([np.zeros((8, 8)), bad_files["text"]])
    half = np.zeros((8, 8, 3), np.uint8)
    half[:4] = 255  # half the pixels black, half white, in every channel
    expected = np.zeros(24, np.float32)
    expected[[0, 7, 8, 15, 16, 23]] = 0.5
    np.testing.assert_array_equal(ColorHistogram(bins=8).fit_transform([half])[0], expected)


def test_public_functions_validate_their_parameters():
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = np.zeros((20, 3)), np.arange(20) % 2
    for kwargs, name in [({"n_permutations": 0}, "n_permutations"),
                         ({"max_samples": 1}, "max_samples"), ({"cv": 1}, "cv")]:
        with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of domain_shift"):
            domain_shift(X, X, **kwargs)
    with pytest.raises(InvalidParameterError, match="'baselines' parameter of transfer_report"):
        transfer_report(X, y, {"raw": None}, baselines="none")
    with pytest.raises(InvalidParameterError, match="'alpha' parameter of transfer_report"):
        transfer_report(X, y, {"raw": None}, alpha=1.5)
    with pytest.raises(InvalidParameterError, match="'embedder' parameter of layer_sweep"):
        layer_sweep(X, y, "test_efficientnet")
