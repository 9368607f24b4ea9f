"""Mixed DataFrames in one call: image-path, text, numeric and categorical columns.

:func:`make_embedding_transformer` looks at a DataFrame's columns and builds the
``ColumnTransformer`` an experienced user would write by hand, for a table as it comes, gaps
included: an :class:`ImageEmbedder` per image column and a :class:`TextEmbedder` per text
column (a row without an image or a text gets zeros plus a ``missing`` indicator), median
imputation with a missing indicator and scaling for numbers, and one-hot encoding for
categories (a missing category is a category of its own).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods, validate_params
from sklearn.utils.validation import check_is_fitted

from sktransfer._input import as_sequence, column_name, is_missing
from sktransfer.modality import IMAGES

_TEXT_MIN_WORDS = 4  # a string column whose values average more words than this is text
_MAX_CATEGORIES = 50


class WithMissingIndicator(TransformerMixin, BaseEstimator):
    """Embed the rows that have a sample; give rows without one zeros and an indicator.

    Missing means None, NaN, pandas.NA, or a string that is empty or only white space (an
    empty cell of a table). Rows that *have* a sample that cannot be read still follow the
    wrapped embedder's ``on_error``.

    Parameters
    ----------
    embedder : ImageEmbedder or TextEmbedder

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import ImageEmbedder
    >>> from sktransfer.compose import WithMissingIndicator
    >>> images = [np.zeros((32, 32), dtype=np.uint8), None]
    >>> wrapped = WithMissingIndicator(ImageEmbedder("test_efficientnet", weights="random"))
    >>> out = wrapped.fit_transform(images)
    >>> out.shape, out[1, :-1].any(), out[:, -1].tolist()
    ((2, 257), np.False_, [0.0, 1.0])
    """

    def __init__(self, embedder: Any):
        self.embedder = embedder

    def fit(self, X: Any, y: Any = None) -> WithMissingIndicator:
        items, present = self._split(X)
        self.embedder_ = clone(self.embedder)
        sample = [item for item, keep in zip(items, present, strict=True) if keep][:1]
        if not sample:
            raise ValueError("every row is missing: nothing to embed")
        self.embedder_.fit(sample)
        self.n_features_out_ = self.embedder_.n_features_out_ + 1
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "embedder_")
        items, present = self._split(X)
        out = np.zeros((len(items), self.n_features_out_), dtype=np.float32)
        rows = np.flatnonzero(present)
        if len(rows):
            subset = [items[row] for row in rows]
            # sktransfer embedders name errors by the row of X, not of the subset
            embed_rows = getattr(self.embedder_, "embed_rows", None)
            out[rows, :-1] = (embed_rows(subset, rows.tolist(), column=column_name(X))
                              if embed_rows is not None else self.embedder_.transform(subset))
        out[:, -1] = ~present
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "embedder_")
        names = list(self.embedder_.get_feature_names_out())
        return np.asarray([*names, "missing"], dtype=object)

    @staticmethod
    def _split(X: Any) -> tuple[list[Any], np.ndarray]:
        items = list(as_sequence(X, "samples"))
        return items, np.array([not (is_missing(item) or (isinstance(item, str)
                                                          and not item.strip()))
                                for item in items], dtype=bool)


@validate_params(
    {"frame": ["array-like"],
     "image_columns": [None, list], "text_columns": [None, list],
     "numeric_columns": [None, list], "categorical_columns": [None, list],
     "image_embedder": [None, HasMethods(["fit", "transform"])],
     "text_embedder": [None, HasMethods(["fit", "transform"])],
     "cache": [None, str, os.PathLike, HasMethods(["lookup", "store"])]},
    prefer_skip_nested_validation=True,
)
def make_embedding_transformer(
    frame: Any,
    *,
    image_columns: list[str] | None = None,
    text_columns: list[str] | None = None,
    numeric_columns: list[str] | None = None,
    categorical_columns: list[str] | None = None,
    image_embedder: Any = None,
    text_embedder: Any = None,
    cache: Any = None,
) -> Any:
    """A ColumnTransformer that embeds a DataFrame's image, text and tabular columns.

    Columns not named explicitly are assigned by their content: strings that end like image
    files are image paths; other strings with several words on average are text; strings with
    few distinct values, booleans and categories are categorical; numbers are numeric.
    Everything else is dropped.

    A table is taken as it comes, with gaps: a missing image or text (None, NaN, an empty
    cell) gives zeros plus a ``{column}__missing`` indicator (:class:`WithMissingIndicator`);
    a missing number is imputed with the column's median, plus a
    ``{column}__missingindicator_{column}`` indicator when the data it is fitted on has gaps
    there; a missing category is one-hot encoded as a category of its own. A sample that is
    present but broken (an unreadable image file) still follows the embedder's ``on_error``.

    Parameters
    ----------
    frame : pandas.DataFrame
        A sample of the data (for example the training set) to look at.
    image_columns, text_columns, numeric_columns, categorical_columns : list of str, optional
        Force the role of these columns.
    image_embedder, text_embedder : estimator, optional
        Default ``ImageEmbedder()`` and ``TextEmbedder()``; cloned for each column.
    cache : str, Path or FeatureCache, optional
        Set as ``cache`` on the default embedders.

    Returns
    -------
    sklearn.compose.ColumnTransformer
        Output columns are named ``{column}__{feature}``; ``set_output(transform="pandas")``
        works.

    Examples
    --------
    >>> import pandas as pd
    >>> from sktransfer.compose import make_embedding_transformer
    >>> frame = pd.DataFrame({
    ...     "review": ["A gripping and tender film.", "Dull, slow and far too long."],
    ...     "year": [2001, 2015], "genre": ["drama", "comedy"]})
    >>> columns = make_embedding_transformer(frame).set_output(transform="pandas")
    >>> out = columns.fit_transform(frame)
    >>> out.shape, list(out.columns[[0, -4, -3, -2]])
    ((2, 388), ['review__textembedder0', 'review__missing', 'year__year', 'genre__genre_comedy'])
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from sktransfer.image import ImageEmbedder
    from sktransfer.text import TextEmbedder

    roles = _column_roles(frame, image_columns, text_columns, numeric_columns,
                          categorical_columns)
    image_embedder = image_embedder or ImageEmbedder(cache=cache)
    text_embedder = text_embedder or TextEmbedder(cache=cache)
    transformers: list[tuple[str, Any, Any]] = []
    for column in roles["image"]:
        transformers.append((column, WithMissingIndicator(clone(image_embedder)), column))
    for column in roles["text"]:
        transformers.append((column, WithMissingIndicator(clone(text_embedder)), column))
    for column in roles["numeric"]:
        # scaled first (StandardScaler skips NaN and passes it on), then imputed: the
        # indicator stays 0/1
        transformers.append((column, make_pipeline(
            StandardScaler(),
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
            [column]))
    for column in roles["categorical"]:
        transformers.append((column, OneHotEncoder(handle_unknown="ignore",
                                                   sparse_output=False), [column]))
    if not transformers:
        raise ValueError("found no image, text, numeric or categorical column to use")
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)


def _column_roles(frame: Any, image: Any, text: Any, numeric: Any,
                  categorical: Any) -> dict[str, list[str]]:
    import pandas as pd

    given = {"image": list(image or []), "text": list(text or []),
             "numeric": list(numeric or []), "categorical": list(categorical or [])}
    named = [c for columns in given.values() for c in columns]
    unknown = [c for c in named if c not in frame.columns]
    if unknown:
        raise ValueError(f"columns not in the frame: {unknown}")
    for column in frame.columns:
        if column in named:
            continue
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype):
            given["categorical"].append(column)
        elif pd.api.types.is_numeric_dtype(values):
            given["numeric"].append(column)
        elif pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
            role = _string_role(values.dropna())
            if role:
                given[role].append(column)
    return given


def _string_role(values: Any) -> str | None:
    strings = [v for v in values.head(200) if isinstance(v, str)]
    if not strings:
        return None
    if IMAGES.claims(strings):
        return "image"
    if np.mean([len(v.split()) for v in strings]) > _TEXT_MIN_WORDS:
        return "text"
    if values.nunique() <= _MAX_CATEGORIES:
        return "categorical"
    return "text"
