"""Coercion of X into samples, missing values and text problems (sktransfer._input)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from sktransfer._input import (
    as_sequence,
    coerce_image_batch,
    image_items,
    is_missing,
    text_items,
    text_problem,
)


def test_containers_become_lists_of_samples():
    expected = ["a", "b"]
    for X in (expected, np.array(expected, dtype=object), pd.Series(expected),
              pd.DataFrame({"c": expected}), pl.Series(expected), pl.DataFrame({"c": expected}),
              np.array(expected, dtype=object).reshape(2, 1), (s for s in expected)):
        assert list(as_sequence(X, "texts")) == expected, type(X)


def test_whole_input_problems_say_what_to_do():
    import scipy.sparse

    with pytest.raises(ValueError, match="0 samples"):
        text_items([])
    with pytest.raises(ValueError, match="wrap one sample in a list"):
        text_items("one string")
    with pytest.raises(ValueError, match="2 columns"):
        text_items(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    with pytest.raises(TypeError, match="sparse"):
        text_items(scipy.sparse.csr_matrix(np.ones((2, 1))))
    with pytest.raises(ValueError, match="0 feature"):
        image_items(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="0 samples"):
        image_items(np.zeros((0, 8, 8), dtype=np.uint8))


def test_missing_values_and_text_problems():
    assert [is_missing(v) for v in (None, np.nan, pd.NA, pd.NaT, "", 0, "x")] == \
        [True, True, True, True, False, False, False]
    assert text_problem("fine") is None
    assert text_problem(" \n") == "empty text"
    assert text_problem(None) == "missing text (None/NaN)"
    assert text_problem(3.5) == "expected a string, got float 3.5"


def test_batch_arrays_are_split_per_image():
    assert len(coerce_image_batch(np.zeros((5, 8, 8), dtype=np.uint8))) == 5
    assert coerce_image_batch(np.zeros((5, 8, 8, 3), dtype=np.uint8))[0].shape == (8, 8, 3)
    digits = coerce_image_batch(np.zeros((3, 64)))
    assert digits[0].shape == (8, 8)
    assert coerce_image_batch([np.zeros((8, 8))]) is None
    with pytest.raises(ValueError, match="not a square number"):
        coerce_image_batch(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="transpose"):
        coerce_image_batch(np.zeros((2, 3, 16, 16)))
