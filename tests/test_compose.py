"""Mixed DataFrames: column roles, missing images, names, pandas output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CNN
from PIL import Image

from sktransfer import ImageEmbedder, InputError
from sktransfer.compose import WithMissingIndicator, make_embedding_transformer


@pytest.fixture
def frame(tmp_path, photos):
    paths = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(photos[i % len(photos)][:64, :64]).save(path)
        paths.append(str(path))
    return pd.DataFrame({
        "photo": paths,
        "caption": [f"a photo of a landscape number {i} in the sun" for i in range(6)],
        "price": np.arange(6.0),
        "colour": ["red", "blue"] * 3,
        "flag": [True, False] * 3,
        "when": pd.date_range("2024-01-01", periods=6),
    })


def tiny_image():
    return ImageEmbedder(TINY_CNN, weights="random")


def test_columns_are_assigned_by_content(frame):
    columns = make_embedding_transformer(frame, image_embedder=tiny_image())
    roles = {name: type(getattr(t, "embedder", t)).__name__ if not hasattr(t, "steps")
             else "+".join(type(step).__name__ for _, step in t.steps)
             for name, t, _ in columns.transformers}
    assert roles == {"photo": "ImageEmbedder", "caption": "TextEmbedder",
                     "price": "StandardScaler+SimpleImputer", "colour": "OneHotEncoder",
                     "flag": "OneHotEncoder"}  # the datetime column is dropped
    assert all(type(t).__name__ == "WithMissingIndicator" for name, t, _ in
               columns.transformers if name in ("photo", "caption"))


def test_output_names_and_pandas(frame):
    columns = make_embedding_transformer(frame, image_embedder=tiny_image())
    out = columns.set_output(transform="pandas").fit_transform(frame)
    assert out.shape == (6, 257 + 385 + 1 + 2 + 2)
    assert out.columns[0] == "photo__imageembedder0"
    assert "photo__missing" in out.columns and "caption__textembedder383" in out.columns
    assert "caption__missing" in out.columns
    assert {"price__price", "colour__colour_red", "flag__flag_True"} <= set(out.columns)


def test_missing_images_get_zeros_and_an_indicator(frame):
    frame.loc[[1, 4], "photo"] = [None, np.nan]
    out = make_embedding_transformer(frame, image_embedder=tiny_image()) \
        .set_output(transform="pandas").fit_transform(frame)
    image_block = out.filter(like="photo__imageembedder").to_numpy()
    assert (image_block[[1, 4]] == 0).all() and (image_block[[0, 2, 3, 5]] != 0).any(axis=1).all()
    assert out["photo__missing"].tolist() == [0, 1, 0, 0, 1, 0]


def test_unreadable_images_still_follow_on_error(frame, bad_files):
    frame.loc[1, "photo"] = None
    frame.loc[2, "photo"] = str(bad_files["text"])
    with pytest.raises(InputError, match=r"row 2, column 'photo': .*not an image"):
        make_embedding_transformer(frame, image_embedder=tiny_image()).fit_transform(frame)
    lenient = ImageEmbedder(TINY_CNN, weights="random", on_error="nan")
    with pytest.warns(UserWarning, match=r"1 of 5 rows .*row 2, column 'photo':"):
        out = make_embedding_transformer(frame, image_embedder=lenient).fit_transform(frame)
    assert np.isnan(out[2, :256]).all() and out[2, 256] == 0 and out[1, 256] == 1


def test_explicit_roles_and_errors(frame):
    columns = make_embedding_transformer(frame, text_columns=["colour"],
                                         numeric_columns=["flag"],
                                         image_embedder=tiny_image())
    roles = {name: t for name, t, _ in columns.transformers}
    assert type(roles["colour"].embedder).__name__ == "TextEmbedder"
    assert type(roles["flag"][0]).__name__ == "StandardScaler"
    with pytest.raises(ValueError, match="not in the frame"):
        make_embedding_transformer(frame, image_columns=["nope"])
    with pytest.raises(ValueError, match="found no"):
        make_embedding_transformer(frame[["when"]])


def test_with_missing_indicator_alone():
    wrapped = WithMissingIndicator(tiny_image())
    with pytest.raises(ValueError, match="every row is missing"):
        wrapped.fit([None, None])
    out = wrapped.fit_transform(pd.Series([np.zeros((16, 16), dtype=np.uint8), None]))
    assert out.shape == (2, 257) and out[:, -1].tolist() == [0.0, 1.0]
    assert wrapped.get_feature_names_out()[-1] == "missing"


def test_tabular_plus_image_pipeline_cross_validates(frame):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    y = np.array([0, 1] * 3)
    model = make_pipeline(make_embedding_transformer(frame, image_embedder=tiny_image()),
                          LogisticRegression(max_iter=500))
    assert cross_val_score(model, frame, y, cv=2).shape == (2,)
