"""The image pipeline (sktransfer._images): timm's preprocessing, augmentation, batching."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from conftest import TINY_CNN
from PIL import Image

from sktransfer import ImageEmbedder, InputError
from sktransfer._decode import load_image
from sktransfer._images import (
    PREFETCH,
    Augment,
    Preprocessor,
    decoded_batches,
    image_batches,
)


def assert_matches_timm(ours: np.ndarray, theirs: np.ndarray, std) -> None:
    """Equal to timm's transform but for rounding: Pillow resamples only the cropped columns,
    which moves a few pixels by one 8-bit level (1/255 before normalisation; 0.15 % of the
    pixels of a noise image, fewer on photos)."""
    one_level = 1.0 / 255 / min(std) + 1e-6
    np.testing.assert_allclose(ours, theirs, atol=one_level)
    assert np.mean(np.abs(ours - theirs) > 1e-6) < 1e-2


def test_preprocessing_matches_timm_eval_transform(photos):
    import timm
    from timm.data import create_transform, resolve_model_data_config

    for name in ("tf_efficientnet_lite0", "test_vit", "resnet10t"):
        config = resolve_model_data_config(timm.create_model(name, pretrained=False))
        ours, theirs = Preprocessor(config), create_transform(**config)
        for photo in photos:
            image = Image.fromarray(photo)
            assert_matches_timm(ours(image), theirs(image).numpy(), config["std"])


def test_preprocessing_of_portrait_and_tiny_images():
    import timm
    from timm.data import create_transform, resolve_model_data_config

    config = resolve_model_data_config(timm.create_model("tf_efficientnet_lite0"))
    ours, theirs = Preprocessor(config), create_transform(**config)
    rng = np.random.default_rng(0)
    for shape in [(500, 300, 3), (8, 8, 3), (224, 224, 3), (257, 1000, 3)]:
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        out = ours(image)
        assert out.shape == (3, 224, 224) and out.dtype == np.float32
        assert_matches_timm(out, theirs(image).numpy(), config["std"])


PREP = {"input_size": (3, 16, 16), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
        "crop_pct": 0.8, "interpolation": "bilinear"}


def noise(n, size=(24, 20), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def test_batches_follow_the_order_and_equal_the_per_image_transform():
    images, prep = noise(7), Preprocessor(PREP)
    order = [6, 0, 3, 1, 5, 2, 4]
    batches = list(image_batches(images, range(7), prep, batch_size=3, order=order, workers=2))
    assert [b.positions for b in batches] == [[6, 0, 3], [1, 5, 2], [4]]
    for batch in batches:
        expected = np.stack([prep(load_image(images[p])) for p in batch.positions])
        np.testing.assert_array_equal(batch.pixels.numpy(), expected)
        assert batch.errors == {}


def test_bad_rows_are_named_by_their_label_or_raise_the_first_one():
    items = [*noise(2), "missing.png", np.zeros((0, 3, 3), np.uint8), *noise(1)]
    labels = [10, 11, 12, 13, 14]
    batches = list(image_batches(items, labels, Preprocessor(PREP), batch_size=4,
                                 on_error="zeros"))
    assert [b.positions for b in batches] == [[0, 1], [4]]
    errors = batches[0].errors
    assert sorted(errors) == [2, 3]
    assert str(errors[2]) == "row 12: file not found: missing.png"
    assert str(errors[3]).startswith("row 13: array of shape (0, 3, 3)")
    with pytest.raises(InputError, match=r"^row 12: file not found"):
        list(image_batches(items, labels, Preprocessor(PREP), batch_size=4))


def test_raising_keeps_the_batches_before_the_bad_one():
    items = [*noise(4), "missing.png"]
    seen = []
    with pytest.raises(InputError, match="row 4"):
        for batch in image_batches(items, range(5), Preprocessor(PREP), batch_size=2):
            seen.extend(batch.positions)
    assert seen == [0, 1, 2, 3]


def test_prefetch_is_bounded():
    """However long the input, at most PREFETCH batches are being prepared at once."""
    running, peak, lock = [0], [0], threading.Lock()

    def work(position):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002)
        with lock:
            running[0] -= 1
        return position

    started = []
    for positions, results, _ in decoded_batches(work, range(200), range(200), batch_size=4,
                                                 workers=64, on_error="raise"):
        assert results == positions
        started.append(len(positions))
        time.sleep(0.01)  # a slow consumer: the producer must wait, not run ahead
    assert sum(started) == 200
    assert peak[0] <= PREFETCH * 4


def test_augmentation_crops_the_resized_image_and_flips():
    prep = Preprocessor(PREP)  # resize shorter side to 20, crop 16
    image = Image.fromarray(noise(1, size=(40, 50))[0])
    resized = np.asarray(image.resize((25, 20), Image.Resampling.BILINEAR))
    corner = prep.crop(image, Augment(top=0.0, left=0.0, flip=False))
    np.testing.assert_array_equal(corner, resized[:16, :16])
    far = prep.crop(image, Augment(top=0.999, left=0.999, flip=True))
    np.testing.assert_array_equal(far, resized[4:20, 9:25][:, ::-1])


def test_augmentation_is_seeded_whatever_the_threads():
    images, prep = noise(9), Preprocessor(PREP)

    def draw(workers):
        rng = np.random.default_rng(5)
        return torch.cat([b.pixels for b in image_batches(images, range(9), prep, batch_size=4,
                                                          workers=workers, rng=rng)])

    first = draw(1)
    assert torch.equal(first, draw(4))
    evaluation = torch.cat([b.pixels for b in image_batches(images, range(9), prep,
                                                            batch_size=4)])
    assert not torch.equal(first, evaluation)


def test_fine_tuning_sees_exactly_the_embedders_input(photo_files, monkeypatch):
    """For the same model and image, the fine-tuning classifier's evaluation input is
    bit-identical to ImageEmbedder's preprocessed input (JPEG files decoded at reduced size,
    the model's own interpolation and crop)."""
    from sktransfer.backbones import _engines
    from sktransfer.finetune import FineTunedImageClassifier

    seen = []
    real = _engines._EagerEngine.__call__

    def spy(self, batch):
        seen.append(batch.clone())
        return real(self, batch)

    monkeypatch.setattr(_engines._EagerEngine, "__call__", spy)
    files = [str(p) for p in photo_files]
    ImageEmbedder(TINY_CNN, weights="random", backend="torch").fit_transform(files)
    embedder_input = torch.cat(seen)

    clf = FineTunedImageClassifier(TINY_CNN, weights="random", max_epochs=1, batch_size=4,
                                   validation_fraction=0.5, random_state=0)
    clf.fit(files + files, [0, 1] * len(files))
    inputs = []
    real_forward = clf.net_.forward
    monkeypatch.setattr(clf.net_, "forward", lambda x: inputs.append(x.clone()) or
                        real_forward(x))
    clf.predict_proba(files)
    assert torch.equal(torch.cat(inputs), embedder_input)


def test_files_are_hashed_only_when_keys_are_asked_for(tmp_path, monkeypatch):
    """Without a cache nothing needs a file's content key: decoding must not pay for it."""
    import sktransfer._decode
    from sktransfer._decode import image_content_key

    path = tmp_path / "a.png"
    Image.fromarray(noise(1)[0]).save(path)
    items, prep = [str(path), noise(1)[0]], Preprocessor(PREP)
    hashed = []
    real = sktransfer._decode.content_digest
    monkeypatch.setattr(sktransfer._decode, "content_digest",
                        lambda *parts: hashed.append(1) or real(*parts))
    plain = next(image_batches(items, range(2), prep, batch_size=2))
    assert plain.keys == [None, None] and hashed == []
    keyed = next(image_batches(items, range(2), prep, batch_size=2, keyed=True))
    assert keyed.keys == [image_content_key(str(path)), None]
    assert torch.equal(keyed.pixels, plain.pixels)
