"""BaseEmbedder: one plan per call, the cache space, per-batch storage, the embed_rows seam."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_CNN

from sktransfer import FeatureCache, ImageEmbedder, InputError, TextEmbedder
from sktransfer.backbones import _engines


def images(n, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))


def test_a_fully_cached_call_opens_no_onnx_session(tmp_path, monkeypatch):
    embedder = ImageEmbedder(TINY_CNN, weights="random", backend="auto", precision="float32",
                             cache=tmp_path)
    X = images(4)
    first = embedder.fit_transform(X)
    backbone = embedder._get_backbone()
    assert embedder._plan(backbone).backend == "onnxruntime"
    monkeypatch.setattr(backbone, "engines", {})  # as in a new process with a warm cache
    opened = []
    monkeypatch.setattr(_engines, "_OnnxEngine",
                        lambda *a, **k: opened.append(1) or pytest.fail("session opened"))
    monkeypatch.setattr(_engines, "onnx_file", lambda *a, **k: pytest.fail("graph exported"))
    np.testing.assert_array_equal(embedder.transform(X), first)
    assert opened == []


def test_finished_batches_are_stored_before_a_late_bad_row_raises(tmp_path):
    X = [*images(6), "missing.png"]
    embedder = ImageEmbedder(TINY_CNN, weights="random", batch_size=2, cache=tmp_path)
    with pytest.raises(InputError, match="row 6: file not found"):
        embedder.fit_transform(X)
    assert len(FeatureCache(tmp_path)) == 6  # three finished batches of two


def test_text_batches_are_stored_as_they_finish(tmp_path, monkeypatch):
    embedder = TextEmbedder(batch_size=2, cache=tmp_path).fit(["x"])
    backbone = embedder._get_backbone()
    real = backbone.encode_batches

    def interrupted_in_the_third_batch(texts, **kwargs):
        for number, batch in enumerate(real(texts, **kwargs), start=1):
            if number == 3:
                raise KeyboardInterrupt  # the user gave up, or the process is being killed
            yield batch

    monkeypatch.setattr(backbone, "encode_batches", interrupted_in_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        embedder.transform([f"review number {i}" for i in range(8)])
    assert len(FeatureCache(tmp_path)) == 4  # two finished batches of two, not 0 of a chunk


def test_embed_rows_names_the_rows_it_is_given():
    embedder = TextEmbedder().fit(["x"])
    with pytest.raises(InputError, match=r"^row 41: empty text"):
        embedder.embed_rows(["fine", ""], [40, 41])
    out = embedder.embed_rows(["fine", "fine"], ["a", "b"])  # labels need not be numbers
    np.testing.assert_array_equal(out[0], out[1])


def test_fill_warns_once_with_a_count():
    from sktransfer import EmbeddingWarning

    with pytest.warns(EmbeddingWarning, match="2 of 3 rows .* filled with nan: row 0: "):
        out = TextEmbedder(on_error="nan").fit_transform([None, "fine", ""])
    assert np.isnan(out[[0, 2]]).all() and np.isfinite(out[1]).all()
