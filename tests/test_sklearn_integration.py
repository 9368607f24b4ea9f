"""scikit-learn fit: clone, pickling without weights, composition, grid search, n_jobs."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CNN, TINY_VIT
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import sktransfer.backbones.sentence as sentence_backbones
import sktransfer.backbones.timm as timm_backbones
from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer.backbones._runtime import clear_loaded


def two_class_images(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright squares on dark ground vs dark squares on bright ground, with noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.integers(0, 60, size=(n, 48, 48, 3)).astype(np.uint8)
    X[y == 1] = 255 - X[y == 1]
    return X, y


@pytest.fixture
def count_loads(monkeypatch):
    """Count real backbone loads (the function behind the per-process cache)."""
    clear_loaded()
    calls = []

    def counting(real_load):
        def counting_load(*args, **kwargs):
            calls.append(args)
            return real_load(*args, **kwargs)
        return counting_load

    for module in (timm_backbones, sentence_backbones):
        monkeypatch.setattr(module, "_load", counting(module._load))
    yield calls
    clear_loaded()


def test_clone_and_grid_search_candidates_share_one_load(count_loads):
    X, y = two_class_images()
    pipe = Pipeline([("embed", ImageEmbedder(TINY_CNN, weights="random")),
                     ("clf", LogisticRegression(max_iter=500))])
    clone(pipe).fit(X, y)
    clone(clone(pipe)).fit(X, y)
    search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0, 10.0]}, cv=3).fit(X, y)
    assert len(count_loads) == 1
    assert search.best_score_ > 0.9


def test_clone_gives_an_unfitted_copy_with_the_same_parameters():
    X, _ = two_class_images(4)
    fitted = ImageEmbedder(TINY_CNN, weights="random", layer=2).fit(X)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "n_features_out_")


def test_pickle_carries_no_weights_and_works_in_a_fresh_process(tmp_path, photos):
    embedder = ImageEmbedder().fit(photos[:1])
    blob = pickle.dumps(embedder)
    assert len(blob) < 10_000  # parameters and a digest, no 13 MB of weights
    (tmp_path / "embedder.pkl").write_bytes(blob)
    np.save(tmp_path / "images.npy", np.stack([p[:300, :450] for p in photos]))
    np.save(tmp_path / "expected.npy", embedder.transform(list(np.load(tmp_path / "images.npy"))))
    script = textwrap.dedent(f"""
        import pickle, sys, numpy as np
        embedder = pickle.loads(open({str(tmp_path / 'embedder.pkl')!r}, 'rb').read())
        assert 'torch' not in sys.modules, 'unpickling must not load torch'
        out = embedder.transform(list(np.load({str(tmp_path / 'images.npy')!r})))
        np.testing.assert_array_equal(out, np.load({str(tmp_path / 'expected.npy')!r}))
        print('identical', out.shape)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "identical (4, 1280)" in result.stdout


def test_unpickling_against_different_weights_is_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    from sktransfer import WeightsMismatchError

    X, _ = two_class_images(2)
    checkpoint = tmp_path / "weights.safetensors"
    net = timm_backbones._create(TINY_CNN)
    save_file(net.state_dict(), checkpoint)
    blob = pickle.dumps(ImageEmbedder(TINY_CNN, weights=str(checkpoint)).fit(X))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.01)
    save_file(net.state_dict(), checkpoint)
    clear_loaded()
    with pytest.raises(WeightsMismatchError, match="refit"):
        pickle.loads(blob).transform(X)
    clear_loaded()


def test_feature_names_and_pandas_output():
    X, _ = two_class_images(3)
    frame = pd.DataFrame({"image": list(X)}, index=["a", "b", "c"])
    embedder = ImageEmbedder(TINY_CNN, weights="random").set_output(transform="pandas")
    out = embedder.fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns[:2]) == ["imageembedder0", "imageembedder1"]
    assert out.shape == (3, 256) and list(out.index) == ["a", "b", "c"]
    assert list(embedder.get_feature_names_out()) == list(out.columns)
    assert out.dtypes.unique().tolist() == [np.float32]


def test_polars_output():
    import polars as pl

    X, _ = two_class_images(2)
    out = ImageEmbedder(TINY_CNN, weights="random").set_output(transform="polars").fit_transform(X)
    assert isinstance(out, pl.DataFrame) and out.shape == (2, 256)


def test_html_repr_shows_the_parameters():
    html = ImageEmbedder(TINY_CNN, layer=2)._repr_html_()
    assert "ImageEmbedder" in html and "test_efficientnet" in html


def test_column_transformer_with_images_and_numbers():
    X, y = two_class_images(12)
    frame = pd.DataFrame({"image": list(X), "size": np.arange(12.0)})
    columns = ColumnTransformer([
        ("img", ImageEmbedder(TINY_CNN, weights="random", layer=-2), ["image"]),
        ("num", StandardScaler(), ["size"]),
    ]).set_output(transform="pandas")
    out = columns.fit_transform(frame, y)
    assert out.shape == (12, 48 + 1)
    assert out.columns[0] == "img__imageembedder0" and out.columns[-1] == "num__size"
    # a column given as a name (1-D Series) works too
    single = ColumnTransformer([("img", ImageEmbedder(TINY_CNN, weights="random"), "image")])
    assert single.fit_transform(frame).shape == (12, 256)


def test_feature_union_of_two_layers():
    X, _ = two_class_images(4)
    union = FeatureUnion([
        ("mid", ImageEmbedder(TINY_CNN, weights="random", layer=2)),
        ("top", ImageEmbedder(TINY_CNN, weights="random")),
    ])
    assert union.fit_transform(X).shape == (4, 32 + 256)
    assert union.get_feature_names_out()[0] == "mid__imageembedder0"


def test_cross_val_score_with_n_jobs_2():
    X, y = two_class_images(24)
    pipe = make_pipeline(ImageEmbedder(TINY_CNN, weights="random"),
                         LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, X, y, cv=3, n_jobs=2)
    assert scores.shape == (3,) and scores.mean() > 0.9


def test_grid_search_over_model_layer_and_pooling_with_n_jobs_2():
    X, y = two_class_images(24)
    pipe = Pipeline([("embed", ImageEmbedder(TINY_CNN, weights="random")),
                     ("clf", LogisticRegression(max_iter=500))])
    grid = [
        {"embed__model": [TINY_CNN], "embed__layer": [None, 1], "embed__pooling": ["avg", "max"]},
        {"embed__model": [TINY_VIT], "embed__layer": [None, -1], "embed__pooling": ["cls", "avg"]},
    ]
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 8
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.predict(X[:4]).shape == (4,)


def test_text_embedder_in_a_grid_search(count_loads):
    texts = ["a wonderful, moving film", "brilliant acting and a clever plot",
             "a delight from start to finish", "dull, slow and far too long",
             "a tedious mess", "the worst film of the year"] * 3
    y = np.array([1, 1, 1, 0, 0, 0] * 3)
    pipe = make_pipeline(TextEmbedder(), LogisticRegression())
    search = GridSearchCV(pipe, {"logisticregression__C": [0.1, 10.0]}, cv=3).fit(texts, y)
    assert search.best_score_ > 0.8
    assert len(count_loads) == 1
