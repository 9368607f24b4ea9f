"""The fast paths stay faithful: reduced JPEG decoding, bfloat16, ONNX Runtime, torch.compile,
threads. Fidelity is measured against the plain float32 reference a user would write (full
decode, timm's own transform, eager float32) on real photos with real pretrained weights.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CNN, TINY_VIT
from PIL import Image

from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer._decode import load_image
from sktransfer._images import Preprocessor
from sktransfer.backbones import _engines, _runtime
from sktransfer.datasets import write_photos


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module", params=[(640, 480), (1600, 1200)], ids=["640x480", "1600x1200"])
def jpegs(request, tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp(f"jpegs{request.param[0]}")
    return write_photos(folder, 24, request.param, random_state=1)


def plain_timm_reference(paths: list[str], backbone) -> np.ndarray:
    """What a user writes by hand: PIL full decode, timm's transform, eager float32."""
    import timm

    transform = timm.data.create_transform(**backbone.data_config)
    batch = torch.stack([transform(Image.open(path).convert("RGB")) for path in paths])
    with torch.inference_mode():
        return backbone.model(batch).numpy()


@pytest.mark.parametrize("params", [
    {},  # the default: reduced decoding, backend and precision chosen for this machine
    {"backend": "torch", "precision": "bfloat16"},
    {"backend": "onnxruntime"},
], ids=["default", "torch-bfloat16", "onnxruntime"])
def test_fast_paths_stay_faithful_on_real_photos(jpegs, params):
    embedder = ImageEmbedder(**params).fit(jpegs[:1])
    reference = plain_timm_reference(jpegs, embedder._get_backbone())
    similarity = cosine(embedder.transform(jpegs), reference)
    assert similarity.min() >= 0.99, similarity.min()


def test_reduced_decoding_decodes_small_and_never_below_the_target(jpegs):
    backbone = ImageEmbedder().fit(jpegs[:1])._get_backbone()
    preprocess = Preprocessor(backbone.data_config)
    target = preprocess.scale[0]  # Lite0: the shorter side is resized to 256
    full = load_image(jpegs[0])
    reduced = load_image(jpegs[0], draft=preprocess.draft_size)
    assert min(reduced.size) >= target
    if min(full.size) >= 2 * target:  # 1600×1200 decodes at 1/4 scale: 400×300
        assert reduced.size == (full.size[0] // 4, full.size[1] // 4)
    else:  # 640×480 cannot shrink without going below 256: decoded at full size
        assert reduced.size == full.size
    # decode="full" sees the image timm sees (up to one 8-bit level in a few pixels).
    same_image = ImageEmbedder(decode="full", backend="torch", precision="float32").fit(jpegs)
    similarity = cosine(same_image.transform(jpegs[:4]), plain_timm_reference(jpegs[:4], backbone))
    assert similarity.min() >= 0.9999


def test_reduced_decoding_applies_exif_rotation(tmp_path, photos):
    photo = Image.fromarray(photos[0]).resize((1200, 800))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    path = tmp_path / "rotated.jpg"
    photo.save(path, exif=exif, quality=90)
    image = load_image(path, draft=(256, 256))
    assert image.size == (400, 600)  # decoded at 1/2 scale, then turned upright


def test_text_bfloat16_stays_faithful():
    from sentence_transformers import SentenceTransformer

    from sktransfer.backbones._packaged import _minilm_folder
    from sktransfer.datasets import load_rotten_tomatoes

    texts = list(load_rotten_tomatoes(n_samples=300).text)
    reference = SentenceTransformer(_minilm_folder(), device="cpu").encode(
        texts, batch_size=32, normalize_embeddings=True)
    for precision in ("auto", "bfloat16"):
        out = TextEmbedder(precision=precision).fit(texts).transform(texts)
        assert cosine(out, reference).min() >= 0.999, precision


def test_onnxruntime_matches_eager_for_layers_and_poolings():
    X = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    for model, params in [(TINY_CNN, dict(layer=[1, None], pooling="max")),
                          (TINY_CNN, dict(layer=-1)),
                          (TINY_VIT, dict(pooling="cls"))]:
        kwargs = dict(model=model, weights="random", batch_size=2, **params)
        onnx = ImageEmbedder(backend="onnxruntime", **kwargs).fit_transform(X)
        eager = ImageEmbedder(backend="torch", precision="float32", **kwargs).fit_transform(X)
        np.testing.assert_allclose(onnx, eager, atol=1e-5, err_msg=f"{model} {params}")


def test_onnx_export_is_written_once_atomically_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SKTRANSFER_HOME", str(tmp_path))
    X = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    exports = []
    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export",
                        lambda *a, **k: exports.append(1) or real_export(*a, **k))
    embedder = ImageEmbedder(TINY_CNN, weights="random", backend="onnxruntime", pooling="max")
    monkeypatch.setattr(embedder._get_backbone(), "engines", {})  # no session from other tests
    first = embedder.fit_transform(X)
    files = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert exports == [1] and len(files) == 1 and files[0].endswith(".onnx")
    embedder._get_backbone().engines.clear()  # as in a new process: the file is read back
    np.testing.assert_array_equal(embedder.transform(X), first)
    assert exports == [1]


def test_auto_falls_back_to_torch_when_export_fails(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SKTRANSFER_HOME", str(tmp_path))
    monkeypatch.setattr(_engines, "onnxruntime_available", lambda: True)

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    X = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    embedder = ImageEmbedder(TINY_CNN, weights="random", pooling="max", layer=0,
                             precision="float32").fit(X)
    # A fresh engine table, restored after the test: the remembered failure stays here.
    monkeypatch.setattr(embedder._get_backbone(), "engines", {})
    with caplog.at_level(logging.WARNING, logger="sktransfer"):
        out = embedder.transform(X)
        assert embedder._plan(embedder._get_backbone()).backend == "torch"
        assert "cannot run on ONNX Runtime" in caplog.text
        assert "unsupported operator" in caplog.text
        embedder.transform(X)  # the failure is remembered: no second export, no second warning
    assert caplog.text.count("uses eager torch instead") == 1
    reference = ImageEmbedder(TINY_CNN, weights="random", pooling="max", layer=0,
                              backend="torch", precision="float32").fit_transform(X)
    np.testing.assert_array_equal(out, reference)
    forced = ImageEmbedder(TINY_CNN, weights="random", pooling="max", layer=0,
                           backend="onnxruntime").fit(X)
    with pytest.raises(RuntimeError, match="unsupported operator"):
        forced.transform(X)


def test_auto_rule(monkeypatch):
    backbone = ImageEmbedder(TINY_CNN, weights="random").fit(np.zeros((1, 8, 8, 3), np.uint8)
                                                             )._get_backbone()
    layers = (None,)

    def choose(precision="auto", native=True, onnx=True, gmacs=0.4):
        monkeypatch.setenv("SKTRANSFER_NATIVE_BF16", "1" if native else "0")
        monkeypatch.setattr(_engines, "onnxruntime_available", lambda: onnx)
        monkeypatch.setattr(type(backbone), "gmacs", property(lambda self: gmacs))
        execution = _engines.plan_execution(backbone, "auto", precision, None, layers, "avg")
        return execution.backend, execution.precision

    assert choose() == ("onnxruntime", "float32")  # small, memory-bound network
    assert choose(gmacs=4.1) == ("torch", "bfloat16")  # ResNet-50-sized, native bfloat16
    assert choose(gmacs=4.1, native=False) == ("onnxruntime", "float32")
    assert choose(gmacs=4.1, onnx=False, native=False) == ("torch", "float32")
    assert choose(onnx=False) == ("torch", "bfloat16")
    assert choose(precision="bfloat16") == ("torch", "bfloat16")
    assert choose(precision="float32", gmacs=4.1) == ("onnxruntime", "float32")
    with pytest.raises(ValueError, match="runs float32"):
        _engines.plan_execution(backbone, "onnxruntime", "bfloat16", None, layers, "avg")


def test_gmacs_counts_the_network():
    backbone = ImageEmbedder().fit(np.zeros((1, 8, 8, 3), np.uint8))._get_backbone()
    assert 0.35 < backbone.gmacs < 0.45  # EfficientNet-Lite0 at 224×224: 0.40 GMACs


def test_precision_auto_follows_the_cpu(monkeypatch):
    monkeypatch.setenv("SKTRANSFER_NATIVE_BF16", "0")
    assert _runtime.resolve_precision("auto", "cpu") == "float32"
    monkeypatch.setenv("SKTRANSFER_NATIVE_BF16", "1")
    assert _runtime.resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.delenv("SKTRANSFER_NATIVE_BF16")
    if platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").exists():
        pytest.skip("the detection is checked against x86 Linux CPU flags")
    flags = Path("/proc/cpuinfo").read_text().split()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert _runtime.native_bfloat16() == native


def test_thread_setting_is_local_to_the_call(monkeypatch):
    X = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1  # a setting other than the process's, to see it applied
    seen = []
    embedder = ImageEmbedder(TINY_CNN, weights="random", backend="torch", n_threads=wanted,
                             batch_size=2).fit(X)
    stem = embedder._get_backbone().model.conv_stem
    handle = stem.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        embedder.transform(X)
    finally:
        handle.remove()
    assert seen == [wanted, wanted] and torch.get_num_threads() == before
    onnx = ImageEmbedder(TINY_CNN, weights="random", backend="onnxruntime",
                         n_threads=wanted).fit(X)
    onnx.transform(X)
    assert ("onnxruntime", (None,), "avg", wanted) in onnx._get_backbone().engines
    assert torch.get_num_threads() == before
    text = TextEmbedder(n_threads=wanted).fit(["a"])
    seen.clear()
    bert = text._get_backbone().model
    handle = bert.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        text.transform(["a short text", "another one"])
    finally:
        handle.remove()
    assert seen and set(seen) == {wanted} and torch.get_num_threads() == before


def _threads_in_worker() -> int:
    return _runtime.resolve_threads(None)


def test_n_jobs_workers_do_not_oversubscribe():
    from joblib import Parallel, cpu_count, delayed

    counts = Parallel(n_jobs=2)(delayed(_threads_in_worker)() for _ in range(2))
    assert counts == [max(1, cpu_count() // 2)] * 2


@pytest.mark.slow
def test_torch_compile_matches_eager_and_pads_the_last_batch():
    X = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    kwargs = dict(model=TINY_CNN, weights="random", batch_size=4, precision="float32")
    compiled = ImageEmbedder(backend="compile", **kwargs).fit(X)
    out = compiled.transform(X)  # batches of 4 and 1: the 1 is padded to the compiled shape
    np.testing.assert_allclose(out, ImageEmbedder(backend="torch", **kwargs).fit_transform(X),
                               atol=1e-5)
    assert any(key[0] == "compile" and key[-1] == 4 for key in compiled._get_backbone().engines)


@pytest.mark.slow
def test_fast_paths_keep_elpv_accuracy_within_half_a_point():
    """Downstream accuracy: every fast path within 0.5 points of eager float32 (all 2,624
    ELPV images, the demo's classifier and folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sktransfer.datasets import load_elpv

    elpv = load_elpv()
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    scores = {}
    for name, params in {"float32": dict(backend="torch", precision="float32"),
                         "default": {},
                         "onnxruntime": dict(backend="onnxruntime"),
                         "bfloat16": dict(backend="torch", precision="bfloat16")}.items():
        features = ImageEmbedder(**params).fit_transform(elpv.images)
        model = make_pipeline(StandardScaler(), LogisticRegression(
            max_iter=2000, C=0.01, class_weight="balanced"))
        scores[name] = cross_val_score(model, features, elpv.target, cv=folds,
                                       scoring="balanced_accuracy").mean()
    print({name: round(score, 4) for name, score in scores.items()})
    assert scores["float32"] > 0.75
    for name in ("default", "onnxruntime", "bfloat16"):
        assert abs(scores[name] - scores["float32"]) <= 0.005, (name, scores)
