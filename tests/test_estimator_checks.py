"""scikit-learn's own API checks, with every expected failure listed and justified.

scikit-learn's checks build their data as numeric feature matrices (3, 5 or 10 random real
values per row). Those are neither images nor texts, so each check that feeds such data fails
at the first call with our ValueError naming the shape; it is listed below and marked xfail
strictly (a check that starts passing breaks the suite, so the list cannot go stale).
The invariants those checks guard are then verified on inputs the embedders do accept, in
``test_invariants_on_real_inputs``.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from conftest import TINY_CNN
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import ImageEmbedder, TextEmbedder

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

EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "ImageEmbedder": dict.fromkeys(NUMERIC_MATRIX_CHECKS, IMAGE_REASON),
    "TextEmbedder": {
        **dict.fromkeys(NUMERIC_MATRIX_CHECKS, TEXT_REASON),
        "check_n_features_in_after_fitting": TEXT_REASON,
        "check_positive_only_tag_during_fit": TEXT_REASON,
        "check_fit1d": (
            "a 1-D array is TextEmbedder's natural input (one text per row), and fit does not "
            "read the samples of a frozen model; numbers in it fail at transform, naming the row"
        ),
    },
}


def expected_failed_checks(estimator):
    return EXPECTED_FAILURES[type(estimator).__name__]


@parametrize_with_checks(
    [ImageEmbedder(TINY_CNN, weights="random"), TextEmbedder()],
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
]


@pytest.mark.parametrize(("make", "data"), CASES)
def test_invariants_on_real_inputs(make, data):
    """What the xfailed checks guard, on images and texts."""
    X = data()
    estimator = make()
    with pytest.raises(NotFittedError):
        estimator.transform(X)
    params = copy.deepcopy(estimator.get_params())
    assert estimator.fit(X, y=np.arange(len(X))) is estimator
    assert estimator.get_params() == params  # fit overwrites no parameter
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
