"""TextEmbedder: the packaged MiniLM, inputs, errors, determinism, deduplication."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from sktransfer import EmbeddingWarning, InputError, TextEmbedder

TEXTS = ["The film was a delight.", "A slow, tedious mess.", "The film was a delight.",
         "Brilliant acting, weak plot."]


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder().fit(TEXTS)


def test_matches_sentence_transformers_directly(embedder):
    from sentence_transformers import SentenceTransformer

    from sktransfer.backbones._packaged import _minilm_folder

    reference = SentenceTransformer(_minilm_folder(), device="cpu").encode(
        TEXTS, normalize_embeddings=True)
    out = TextEmbedder(precision="float32").fit(TEXTS).transform(TEXTS)
    assert out.shape == (4, 384) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference, atol=1e-5)
    out = embedder.transform(TEXTS)  # precision="auto": bfloat16 where the CPU has it
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert embedder.license_ == "Apache-2.0"


def test_meaning_is_captured(embedder):
    a, b, c = embedder.transform(["a great movie", "an excellent film", "the stock market fell"])
    assert a @ b > a @ c + 0.2


def test_one_text_alone_equals_the_same_text_in_a_batch(embedder):
    batch = embedder.transform(TEXTS * 4)
    alone = embedder.transform([TEXTS[3]])
    np.testing.assert_allclose(alone[0], batch[3], atol=1e-5)
    np.testing.assert_array_equal(embedder.transform(TEXTS * 4), batch)


@pytest.mark.parametrize("precision", ["auto", "bfloat16", "float32"])
def test_a_texts_vector_does_not_depend_on_its_batch(precision):
    """Each text is padded to a fixed bucket of its own length: bit-identical alone, in any
    batch, in any order (padded to the longest of its batch, bfloat16 moved it by 9e-4)."""
    from sktransfer.datasets import load_rotten_tomatoes

    texts = list(dict.fromkeys(load_rotten_tomatoes(n_samples=300).text))[:200]
    embedder = TextEmbedder(precision=precision, batch_size=16).fit(texts[:1])
    together = embedder.transform(texts)
    order = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_array_equal(embedder.transform([texts[i] for i in order]),
                                  together[order])
    for i in (0, 57, 133):
        np.testing.assert_array_equal(embedder.transform([texts[i]])[0], together[i])


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
def test_reduced_precision_batches_always_have_batch_size_rows(precision):
    """oneDNN chooses its bfloat16 kernels by the number of rows: on AMX CPUs a text's
    vector moved by up to 9e-4 between a batch of 1 and one of 2 to 6. So every reduced-precision
    forward batch has batch_size rows, the filler's outputs dropped; float32 needs none."""
    texts = ["a short text", "another short one", "a third", "and a fourth one", "fifth"]
    embedder = TextEmbedder(precision=precision, batch_size=4).fit(texts[:1])
    module = embedder._get_backbone().model[0]
    rows = []
    hook = module.register_forward_pre_hook(
        lambda _, args: rows.append(int(args[0]["input_ids"].shape[0])))
    try:
        vectors = embedder.transform(texts)
        alone = embedder.transform(texts[4:])
    finally:
        hook.remove()
    assert vectors.shape == (5, embedder.n_features_out_)
    np.testing.assert_array_equal(alone[0], vectors[4])
    if precision == "float32":
        assert sum(rows) == 6  # the texts themselves, nothing more
    else:
        assert rows and set(rows) == {4}


def test_a_cached_pass_from_fold_sized_batches_equals_a_fresh_pass(tmp_path):
    """A grid search fills the cache fold by fold; a later pass must read the very vectors a
    fresh computation gives (at most 1e-5 apart at the default settings; here: equal)."""
    from sktransfer.datasets import load_rotten_tomatoes

    texts = list(dict.fromkeys(load_rotten_tomatoes(n_samples=300).text))[:240]
    cached = TextEmbedder(cache=tmp_path).fit(texts[:1])
    for fold in np.array_split(np.random.default_rng(1).permutation(len(texts)), 5):
        cached.transform([texts[i] for i in fold])
    fresh = TextEmbedder().fit_transform(texts)
    np.testing.assert_array_equal(cached.transform(texts), fresh)


def test_identical_texts_are_embedded_once(embedder, monkeypatch):
    backbone = embedder._get_backbone()
    seen = []
    real_encode = backbone.encode_batches

    def spy(texts, **kwargs):
        seen.append(list(texts))
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(backbone, "encode_batches", spy)
    out = embedder.transform(TEXTS)
    assert seen == [[TEXTS[0], TEXTS[1], TEXTS[3]]]
    np.testing.assert_array_equal(out[0], out[2])


def test_containers(embedder):
    reference = embedder.transform(TEXTS)
    for X in (np.array(TEXTS, dtype=object), pd.Series(TEXTS), pd.DataFrame({"review": TEXTS}),
              pl.Series(TEXTS), pl.DataFrame({"review": TEXTS}), tuple(TEXTS),
              pd.Series(TEXTS, dtype="string"), np.array(TEXTS)[:, None]):
        np.testing.assert_allclose(embedder.transform(X), reference, atol=1e-6)


@pytest.mark.parametrize(
    ("bad", "message"),
    [(None, "missing text"), (float("nan"), "missing text"), (pd.NA, "missing text"),
     ("", "empty text"), ("   ", "empty text"), (3.5, "expected a string, got float"),
     (b"bytes", "expected a string, got bytes")],
)
def test_bad_rows(embedder, bad, message):
    X = ["fine", "also fine", bad]
    with pytest.raises(InputError, match=rf"^row 2: {message}"):
        embedder.transform(X)
    with pytest.warns(EmbeddingWarning, match="1 of 3 rows"):
        out = TextEmbedder(on_error="nan").fit_transform(X)
    assert np.isnan(out[2]).all() and np.isfinite(out[:2]).all()
    with pytest.warns(EmbeddingWarning):
        out = TextEmbedder(on_error="zeros").fit_transform(pd.Series(X))
    assert (out[2] == 0).all()


def test_whole_input_problems():
    with pytest.raises(ValueError, match="0 samples"):
        TextEmbedder().fit([])
    with pytest.raises(ValueError, match="single str"):
        TextEmbedder().fit("just one string")
    with pytest.raises(ValueError, match="2 columns"):
        TextEmbedder().fit(pd.DataFrame({"a": ["x"], "b": ["y"]}))


def test_normalize_false_keeps_raw_lengths():
    """MiniLM ends in its own Normalize module: normalize=False must skip it too."""
    raw = TextEmbedder(normalize=False, precision="float32").fit_transform(TEXTS)
    unit = TextEmbedder(precision="float32").fit_transform(TEXTS)
    lengths = np.linalg.norm(raw, axis=1)
    assert (lengths > 2).all() and np.ptp(lengths) > 0.1, lengths
    np.testing.assert_allclose(raw / lengths[:, None], unit, atol=1e-5)


def test_pandas_output_names(embedder):
    out = TextEmbedder().set_output(transform="pandas").fit_transform(
        pd.Series(TEXTS, index=[10, 11, 12, 13]))
    assert list(out.columns[:2]) == ["textembedder0", "textembedder1"]
    assert list(out.index) == [10, 11, 12, 13]


def test_bfloat16_is_faithful():
    full = TextEmbedder(precision="float32").fit_transform(TEXTS)
    half = TextEmbedder(precision="bfloat16").fit_transform(TEXTS)
    assert ((full * half).sum(1) > 0.99).all()
