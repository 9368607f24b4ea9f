"""Scale-out on a real local Dask cluster: 2 worker processes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CNN
from PIL import Image

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from sktransfer import FeatureCache, ImageEmbedder, TextEmbedder  # noqa: E402
from sktransfer.dask import embed  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as dask_client:
        yield dask_client


def loaded_backbones():
    from sktransfer.backbones._runtime import _LOADED

    return [key[:2] for key in _LOADED]


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask_images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_embed_a_dask_column_with_one_model_load_per_worker(client, image_paths, tmp_path):
    frame = dd.from_pandas(pd.DataFrame({"image": image_paths}), npartitions=6)
    embedder = ImageEmbedder(TINY_CNN, weights="random", cache=str(tmp_path))
    features = embed(embedder, frame["image"]).compute()
    expected = ImageEmbedder(TINY_CNN, weights="random").fit_transform(image_paths)
    assert list(features.columns) == list(embedder.get_feature_names_out())
    np.testing.assert_allclose(features.sort_index().to_numpy(), expected, atol=1e-5)
    per_worker = client.run(loaded_backbones)
    assert len(per_worker) == 2
    assert all(keys == [("timm", TINY_CNN)] for keys in per_worker.values()), per_worker
    assert len(FeatureCache(tmp_path)) == 24


def test_text_column_and_one_column_frame(client):
    texts = pd.DataFrame({"review": ["a fine film", "dull", "tense and taut", "a fine film"]})
    features = embed(TextEmbedder(), dd.from_pandas(texts, npartitions=2)).compute()
    expected = TextEmbedder().fit_transform(texts["review"])
    np.testing.assert_allclose(features.to_numpy(), expected, atol=1e-5)


def test_grid_search_on_the_dask_backend_shares_the_cache(client, image_paths, tmp_path):
    import joblib

    y = np.arange(len(image_paths)) % 2
    pipe = make_pipeline(ImageEmbedder(TINY_CNN, weights="random", cache=str(tmp_path)),
                         LogisticRegression(max_iter=300))
    grid = {"logisticregression__C": [0.01, 1.0, 100.0]}
    with joblib.parallel_backend("dask"):
        on_dask = GridSearchCV(pipe, grid, cv=3, n_jobs=-1).fit(image_paths, y)
    assert len(FeatureCache(tmp_path)) == len(image_paths)  # each image embedded once
    local = GridSearchCV(pipe, grid, cv=3).fit(image_paths, y)
    np.testing.assert_allclose(on_dask.cv_results_["mean_test_score"],
                               local.cv_results_["mean_test_score"])
