"""ImageEmbedder: outputs, layers and pooling, inputs, errors, and correct inference."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CNN, TINY_VIT, jpeg_bytes
from PIL import Image

from sktransfer import EmbeddingWarning, ImageEmbedder, InputError


def tiny(**params) -> ImageEmbedder:
    return ImageEmbedder(model=TINY_CNN, weights="random", **params)


@pytest.fixture(scope="module")
def default_embedder():
    return ImageEmbedder().fit(np.zeros((1, 8, 8), dtype=np.uint8))


def test_default_model_is_the_packaged_pretrained_efficientnet(photos, default_embedder):
    """The default gives exactly timm's pre-logits of tf_efficientnet_lite0 with those weights."""
    import timm
    import torch

    from sktransfer._decode import load_image
    from sktransfer._images import Preprocessor
    from sktransfer.backbones import get_backbone_spec

    assert default_embedder.n_features_out_ == 1280
    assert default_embedder.license_ == "Apache-2.0"
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(get_backbone_spec("tf_efficientnet_lite0.packaged").load())
    net.reset_classifier(0)
    net.eval()
    preprocess = Preprocessor(timm.data.resolve_model_data_config(net))
    batch = torch.from_numpy(np.stack([preprocess(load_image(p)) for p in photos]))
    with torch.no_grad():
        expected = net(batch).numpy()
    np.testing.assert_allclose(default_embedder.transform(photos), expected, atol=1e-5)


def test_one_image_alone_equals_the_same_image_in_a_batch_of_16(photos, default_embedder):
    rng = np.random.default_rng(0)
    crops = []
    for i in range(16):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, 100, size=2)
        crops.append(photo[top:top + 300, left:left + 350])
    batch = default_embedder.transform(crops)
    for i in (0, 7, 15):
        alone = default_embedder.transform([crops[i]])
        np.testing.assert_allclose(alone[0], batch[i], atol=1e-4)
    np.testing.assert_array_equal(default_embedder.transform(crops), batch)
    assert not default_embedder._get_backbone().model.training


def test_pretrained_features_differ_from_random_ones(photos):
    pretrained = ImageEmbedder().fit_transform(photos[:2])
    random = ImageEmbedder(weights="random").fit_transform(photos[:2])
    assert pretrained.shape == random.shape == (2, 1280)
    assert not np.allclose(pretrained, random)


def test_every_input_type_gives_the_same_vector(photos, photo_files):
    import polars as pl

    embedder = tiny(decode="full").fit(photo_files[:1])  # reduced JPEG decoding: test_speed.py
    path = photo_files[0]
    decoded = np.asarray(Image.open(path).convert("RGB"))
    reference = embedder.transform([decoded])
    inputs = {
        "str path": [str(path)],
        "Path": [path],
        "bytes": [path.read_bytes()],
        "PIL": [Image.open(path)],
        "array list": [decoded],
        "N×H×W×C array": decoded[None],
        "object array": np.array([str(path)], dtype=object),
        "pandas Series": pd.Series([str(path)]),
        "one-column DataFrame": pd.DataFrame({"image": [str(path)]}),
        "polars Series": pl.Series("image", [str(path)]),
        "polars DataFrame": pl.DataFrame({"image": [str(path)]}),
    }
    for name, X in inputs.items():
        np.testing.assert_allclose(embedder.transform(X), reference, atol=1e-6, err_msg=name)


def test_grey_batches_and_flattened_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.data[:6] / 16.0
    embedder = tiny().fit(X)
    out = embedder.transform(X)
    assert out.shape == (6, 256) and np.isfinite(out).all()
    assert embedder.n_features_in_ == 64
    images = (digits.images[:6] / 16.0)
    np.testing.assert_allclose(tiny().fit_transform(images), out, atol=1e-6)
    with pytest.raises(ValueError, match="64 features"):
        embedder.transform(np.zeros((2, 49)))


def test_layers_and_pooling():
    X = np.random.default_rng(1).integers(0, 256, size=(3, 40, 40, 3), dtype=np.uint8)
    widths = {0: 16, 2: 32, -1: 64}
    for layer, width in widths.items():
        assert tiny(layer=layer).fit_transform(X).shape == (3, width)
    avg, mx = tiny(layer=2).fit_transform(X), tiny(layer=2, pooling="max").fit_transform(X)
    assert (mx >= avg - 1e-6).all() and not np.allclose(mx, avg)
    with pytest.raises(ValueError, match="has 5 layers"):
        tiny(layer=5).fit(X)
    with pytest.raises(ValueError, match="class token"):
        tiny(pooling="cls").fit(X)

    vit = {p: ImageEmbedder(TINY_VIT, weights="random", pooling=p).fit_transform(X)
           for p in ("cls", "token", "avg", "max")}
    np.testing.assert_array_equal(vit["cls"], vit["token"])
    assert not np.allclose(vit["cls"], vit["avg"])
    inner = ImageEmbedder(TINY_VIT, weights="random", layer=2, pooling="cls").fit_transform(X)
    assert inner.shape == (3, 64) and not np.allclose(inner, vit["cls"])


def test_pooled_output_matches_timm_num_classes_0_for_a_vit():
    import timm
    import torch

    X = np.random.default_rng(2).integers(0, 256, size=(2, 48, 48, 3), dtype=np.uint8)
    embedder = ImageEmbedder(TINY_VIT, weights="random", pooling="cls").fit(X)
    net = embedder._get_backbone().model
    reference = timm.create_model(TINY_VIT, pretrained=False, num_classes=0).eval()
    reference.load_state_dict(net.state_dict())
    from sktransfer._decode import load_image
    from sktransfer._images import Preprocessor

    prep = Preprocessor(timm.data.resolve_model_data_config(reference))
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.stack([prep(load_image(x)) for x in X])))
    np.testing.assert_allclose(embedder.transform(X), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "file not found"),
        ("zero", r"empty \(0 bytes\)"),
        ("truncated", "truncated or corrupt"),
        ("text", "not an image Pillow can read"),
        ("directory", "is a directory"),
    ],
)
def test_bad_files_name_the_row_and_the_problem(photo_files, bad_files, kind, message):
    X = [photo_files[0], photo_files[1], bad_files[kind], photo_files[2]]
    embedder = tiny().fit(X)
    with pytest.raises(InputError, match=rf"^row 2: .*{message}") as info:
        embedder.transform(X)
    assert info.value.row == 2

    with pytest.warns(EmbeddingWarning, match=r"1 of 4 rows could not be embedded.*zeros"):
        zeros = tiny(on_error="zeros").fit_transform(X)
    assert (zeros[2] == 0).all() and (zeros[[0, 1, 3]] != 0).any(axis=1).all()
    with pytest.warns(EmbeddingWarning, match="row 2"):
        nans = tiny(on_error="nan").fit_transform(X)
    assert np.isnan(nans[2]).all() and np.isfinite(nans[[0, 1, 3]]).all()
    np.testing.assert_allclose(nans[[0, 1, 3]], zeros[[0, 1, 3]], atol=1e-6)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (42, "unsupported type int"),
        ({"path": "x.jpg"}, "unsupported type dict"),
        (None, "missing image"),
        (float("nan"), "missing image"),
        (np.zeros((3, 32, 32), dtype=np.uint8), "channels-first"),
        (b"", "empty bytes"),
        (b"\x89PNG garbage", "not an image"),
        ("https://example.com/cat.jpg", "URL"),
    ],
)
def test_bad_items_name_the_row(photos, item, message):
    X = [photos[0], item]
    with pytest.raises(InputError, match=rf"^row 1: .*{message}"):
        tiny().fit(X).transform(X)


def test_whole_input_problems_always_raise():
    for X, message in [([], "0 samples"), (np.zeros((0, 8, 8)), "0 samples"),
                       ("one/path.jpg", "single str"),
                       (pd.DataFrame({"a": ["x"], "b": ["y"]}), "2 columns")]:
        with pytest.raises(ValueError, match=message):
            tiny(on_error="zeros").fit(X)


def test_truncated_jpeg_is_not_silently_accepted(photos):
    data = jpeg_bytes(photos[0])
    with pytest.raises(InputError, match="truncated"):
        tiny().fit_transform([data[: len(data) // 3]])


def test_no_warning_when_every_row_is_fine(photos):
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmbeddingWarning)
        tiny(on_error="zeros").fit_transform(photos[:2])


def test_progress_bar_is_shown_only_when_asked(photos, capsys):
    tiny(batch_size=2).fit_transform(photos[:3])
    assert "ImageEmbedder" not in capsys.readouterr().err
    tiny(batch_size=2, progress=True).fit_transform(photos[:3])
    assert "ImageEmbedder" in capsys.readouterr().err


def test_parameters_are_validated_declaratively():
    with pytest.raises(ValueError, match="pooling"):
        tiny(pooling="mean").fit([np.zeros((8, 8))])
    with pytest.raises(ValueError, match="batch_size"):
        tiny(batch_size=0).fit([np.zeros((8, 8))])
    with pytest.raises(ValueError, match="on_error"):
        tiny(on_error="skip").fit([np.zeros((8, 8))])
    with pytest.raises(ValueError, match="unknown image model 'resnet5000'"):
        ImageEmbedder("resnet5000", weights="random").fit([np.zeros((8, 8))])


def test_bfloat16_stays_close_to_float32(photos):
    full = tiny(precision="float32").fit_transform(photos)
    half = tiny(precision="bfloat16").fit_transform(photos)
    assert half.dtype == np.float32
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > 0.99
