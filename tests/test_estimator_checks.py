"""scikit-learn's own API checks on every public estimator, with every expected failure
listed and justified.

scikit-learn's checks build their data as numeric feature matrices (3, 5 or 10 random real
values per row). Those are neither images nor texts, so each check that feeds such data to an
estimator of images or texts fails at the first call with our ValueError naming the shape;
it is listed below and marked xfail strictly (a check that starts passing breaks the suite,
so the list cannot go stale). The invariants those checks guard are then verified on inputs
the estimators do accept, in ``test_invariants_on_real_inputs`` and in the fine-tuning tests.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from conftest import TINY_CNN
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer.compose import WithMissingIndicator
from sktransfer.diagnostics import CORAL, ColorHistogram, DownsampledPixels
from sktransfer.finetune import (
    FineTunedImageClassifier,
    FineTunedImageEmbedder,
    FineTunedImageRegressor,
    FineTunedTextClassifier,
    FineTunedTextEmbedder,
    FineTunedTextRegressor,
)

NUMERIC_MATRIX_CHECKS = [
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_dtype_object",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_estimators_pickle(readonly_memmap=True)",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1sample",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_pipeline_consistency",
    "check_readonly_memmap_input",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
    "check_transformer_general(readonly_memmap=True)",
    "check_transformer_preserve_dtypes",
]

IMAGE_REASON = (
    "feeds a numeric matrix of 2 to 10 random real values per row: not flattened square "
    "images with pixels in [0, 1], so ImageEmbedder raises a ValueError naming the shape"
)
TEXT_REASON = (
    "feeds a numeric matrix: TextEmbedder embeds one column of strings and raises a "
    "ValueError naming the shape"
)

# what the fine-tuned classifiers add to the numeric-matrix checks
CLASSIFIER_CHECKS = [
    "check_classifier_data_not_an_array",
    "check_classifiers_classes",
    "check_classifiers_train",
    "check_class_weight_classifiers",
    "check_supervised_y_2d",
    "check_fit2d_1feature",
    "check_positive_only_tag_during_fit",
    "check_n_features_in_after_fitting",
]
# what the fine-tuned regressors add to the numeric-matrix checks
REGRESSOR_CHECKS = [
    "check_regressors_train",
    "check_regressor_data_not_an_array",
    "check_regressors_no_decision_function",
    "check_regressors_int",
    "check_supervised_y_2d",
    "check_fit2d_1feature",
    "check_positive_only_tag_during_fit",
    "check_n_features_in_after_fitting",
]
# 4 values per row read as 2×2 grey images, whose pixels (random normal values) are not in
# [0, 1]: an InputError naming the first row, before any training
SQUARE_MATRIX_CHECKS = ["check_n_features_in_after_fitting", "check_positive_only_tag_during_fit",
                        "check_fit2d_1feature", "check_regressors_no_decision_function"]
PIXEL_REASON = ("feeds 4 or 1 random real values per row, which ImageEmbedder's input rules "
                "read as 2×2 or 1×1 grey images whose pixels lie outside [0, 1]: an "
                "InputError naming the row, not the message the check looks for")
CORAL_REASON = ("CORAL aligns a source domain to a target domain: fit needs X_target, which "
                "scikit-learn's checks never pass, so fit raises a ValueError saying so; "
                "test_coral_on_both_domains checks the same invariants with X_target")
WRAPPER_REASON = ("feeds a numeric matrix: WithMissingIndicator wraps an embedder of one "
                  "column of samples and raises a ValueError naming the shape")
FIT_READS_NOTHING = ("a 1-D array is one column of samples, and fit does not read the samples "
                     "of a frozen model; numbers in it fail at transform, naming the row")


# fine-tuning reads y first: one sample is one class, which its error says as the check wants
FINE_TUNING_CHECKS = [check for check in NUMERIC_MATRIX_CHECKS if check != "check_fit2d_1sample"]


def _images(checks, reason=IMAGE_REASON, square=PIXEL_REASON):
    return {**dict.fromkeys(checks, reason),
            **{check: square for check in SQUARE_MATRIX_CHECKS if check in checks}}


EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "ImageEmbedder": dict.fromkeys(NUMERIC_MATRIX_CHECKS, IMAGE_REASON),
    "TextEmbedder": {
        **dict.fromkeys(NUMERIC_MATRIX_CHECKS, TEXT_REASON),
        "check_n_features_in_after_fitting": TEXT_REASON,
        "check_positive_only_tag_during_fit": TEXT_REASON,
        "check_fit1d": FIT_READS_NOTHING.replace("a frozen model", "TextEmbedder"),
    },
    # the image baselines read images as ImageEmbedder does
    "DownsampledPixels": dict.fromkeys(NUMERIC_MATRIX_CHECKS, IMAGE_REASON),
    "ColorHistogram": dict.fromkeys(NUMERIC_MATRIX_CHECKS, IMAGE_REASON),
    "FineTunedImageClassifier": _images([*FINE_TUNING_CHECKS, *CLASSIFIER_CHECKS]),
    "FineTunedImageEmbedder": _images([*FINE_TUNING_CHECKS, *SQUARE_MATRIX_CHECKS[:3]]),
    "FineTunedTextClassifier": dict.fromkeys([*FINE_TUNING_CHECKS, *CLASSIFIER_CHECKS],
                                             TEXT_REASON),
    "FineTunedTextEmbedder": dict.fromkeys([*FINE_TUNING_CHECKS, *SQUARE_MATRIX_CHECKS[:3]],
                                           TEXT_REASON),
    "FineTunedImageRegressor": _images([*FINE_TUNING_CHECKS, *REGRESSOR_CHECKS]),
    "FineTunedTextRegressor": dict.fromkeys([*FINE_TUNING_CHECKS, *REGRESSOR_CHECKS],
                                            TEXT_REASON),
    "CORAL": dict.fromkeys([*NUMERIC_MATRIX_CHECKS, "check_fit2d_1feature",
                            "check_n_features_in_after_fitting",
                            "check_positive_only_tag_during_fit"], CORAL_REASON),
    "WithMissingIndicator": {
        **dict.fromkeys([*NUMERIC_MATRIX_CHECKS, "check_n_features_in_after_fitting",
                         "check_positive_only_tag_during_fit"], WRAPPER_REASON),
        "check_fit1d": FIT_READS_NOTHING,
    },
}


def expected_failed_checks(estimator):
    return EXPECTED_FAILURES[type(estimator).__name__]


def _tiny(cls):
    return cls(TINY_CNN, weights="random", max_epochs=1)


@parametrize_with_checks(
    [ImageEmbedder(TINY_CNN, weights="random"), TextEmbedder(),
     _tiny(FineTunedImageClassifier), _tiny(FineTunedImageEmbedder),
     _tiny(FineTunedImageRegressor), FineTunedTextClassifier(max_epochs=1),
     FineTunedTextEmbedder(max_epochs=1), FineTunedTextRegressor(max_epochs=1),
     DownsampledPixels(), ColorHistogram(), CORAL(),
     WithMissingIndicator(ImageEmbedder(TINY_CNN, weights="random"))],
    expected_failed_checks=expected_failed_checks,
    xfail_strict=True,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def _image_data():
    rng = np.random.default_rng(0)
    return list(rng.integers(0, 256, size=(7, 40, 52, 3), dtype=np.uint8))


def _text_data():
    return ["a fine film", "dull", "a gripping, tense thriller", "too long by half",
            "the cast shines", "weak script", "I laughed a lot"]


CASES = [
    pytest.param(lambda: ImageEmbedder(TINY_CNN, weights="random", batch_size=3), _image_data,
                 id="ImageEmbedder"),
    pytest.param(lambda: TextEmbedder(batch_size=3), _text_data, id="TextEmbedder"),
    pytest.param(DownsampledPixels, _image_data, id="DownsampledPixels"),
    pytest.param(ColorHistogram, _image_data, id="ColorHistogram"),
    pytest.param(lambda: WithMissingIndicator(TextEmbedder(batch_size=3)),
                 lambda: [*_text_data()[:3], None, *_text_data()[3:]],
                 id="WithMissingIndicator"),
]


@pytest.mark.parametrize(("make", "data"), CASES)
def test_invariants_on_real_inputs(make, data):
    """What the xfailed checks guard, on images and texts."""
    X = data()
    estimator = make()
    with pytest.raises(NotFittedError):
        estimator.transform(X)
    params = repr(estimator.get_params())
    assert estimator.fit(X, y=np.arange(len(X))) is estimator
    assert repr(estimator.get_params()) == params  # fit overwrites no parameter
    out = estimator.transform(X)
    assert out.shape == (len(X), estimator.n_features_out_) and out.dtype == np.float32
    state = copy.deepcopy(estimator.__dict__)
    estimator.transform(X)
    assert estimator.__dict__.keys() == state.keys()  # transform changes no attribute
    np.testing.assert_array_equal(estimator.fit(X).transform(X), out)  # fit is idempotent
    order = np.random.default_rng(1).permutation(len(X))
    np.testing.assert_allclose(estimator.transform([X[i] for i in order]), out[order], atol=1e-5)
    for i in range(0, len(X), 2):  # subsets and single samples give the same rows
        np.testing.assert_allclose(estimator.transform(X[i:i + 2]), out[i:i + 2], atol=1e-5)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(estimator)).transform(X), out)
    np.testing.assert_array_equal(estimator.fit_transform(X), out)


def test_coral_on_both_domains():
    """The invariants of the checks CORAL xfails, with the target domain it needs."""
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(40, 5)), 2.0 * rng.normal(size=(30, 5)) + 1.0
    coral = CORAL()
    with pytest.raises(NotFittedError):
        coral.transform(source)
    assert coral.fit(source, X_target=target) is coral
    assert coral.n_features_in_ == 5 and coral.get_params() == {"reg": 1.0}
    out = coral.transform(source)
    np.testing.assert_allclose(coral.transform(source[::-1]), out[::-1])  # order invariant
    np.testing.assert_allclose(pickle.loads(pickle.dumps(coral)).transform(source), out)
    np.testing.assert_allclose(clone(coral).fit(source, X_target=target).transform(source),
                               out)
    with pytest.raises(ValueError, match="X_target"):
        CORAL().fit(source)
