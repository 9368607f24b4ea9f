"""Decoding, mode conversion and array rules (sktransfer._decode)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sktransfer._decode import RowProblem, array_to_image, load_image

BAD_ARRAYS = [
        (np.full((4, 4, 3), 2.0), r"must lie in \[0, 1\]"),
        (np.full((4, 4, 3), np.nan), "NaN"),
        (np.full((4, 4), 300, dtype=np.int32), "0..255"),
        (np.zeros((3, 32, 32), dtype=np.uint8), "channels-first"),
        (np.zeros((4, 4, 5), dtype=np.uint8), "not an image"),
        (np.zeros((0, 4), dtype=np.uint8), "no pixels"),
        (np.zeros((4, 4), dtype=complex), "dtype complex"),
        (np.zeros((0, 0, 3), dtype=np.uint8), "no pixels"),
]


def test_exif_orientation_is_applied():
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    loaded = load_image(buffer.getvalue())
    assert loaded.size == (20, 40)  # width and height swapped
    top = np.asarray(loaded)[:5].mean()
    bottom = np.asarray(loaded)[-5:].mean()
    assert top > 200 and bottom < 50  # clockwise: the white left half is now on top


def _encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_sixteen_bit_grey_png_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    rgb = np.asarray(load_image(_encoded(image)))
    assert rgb.shape == (64, 64, 3)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert 120 <= rgb[32, 0, 0] <= 135  # mid grey, not saturated white
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_grey_palette_and_transparency_conversions():
    grey = Image.fromarray(np.full((10, 10), 77, dtype=np.uint8))
    assert np.asarray(load_image(_encoded(grey)))[0, 0].tolist() == [77, 77, 77]

    palette = Image.fromarray(np.full((10, 10, 3), (200, 10, 10), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert np.asarray(load_image(_encoded(palette)))[0, 0].tolist() == [200, 10, 10]

    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half fully transparent
    loaded = np.asarray(load_image(_encoded(Image.fromarray(rgba, "RGBA"))))
    assert loaded[0, 0].tolist() == [255, 0, 0]
    assert loaded[9, 9].tolist() == [255, 255, 255]  # transparent -> white background


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((4, 4), 10, dtype=np.uint8), [10, 10, 10]),
        (np.full((4, 4, 1), 10, dtype=np.uint8), [10, 10, 10]),
        (np.full((4, 4), 65535, dtype=np.uint16), [255, 255, 255]),
        (np.full((4, 4, 3), 0.5, dtype=np.float32), [128, 128, 128]),
        (np.ones((4, 4), dtype=bool), [255, 255, 255]),
        (np.full((4, 4, 3), 200, dtype=np.int64), [200, 200, 200]),
    ],
)
def test_array_dtypes(array, expected):
    assert np.asarray(load_image(array))[0, 0].tolist() == expected


@pytest.mark.parametrize(("array", "message"), BAD_ARRAYS)
def test_bad_arrays_say_what_is_wrong(array, message):
    with pytest.raises(RowProblem, match=message):
        array_to_image(array)


@pytest.mark.parametrize("cache", [False, True])
def test_bad_arrays_reach_the_user_as_row_errors_through_the_embedder(cache, tmp_path):
    # content keys are computed before decoding: they must not crash on any of these
    from conftest import TINY_CNN

    from sktransfer import ImageEmbedder
    from sktransfer.exceptions import InputError

    good = np.zeros((8, 8, 3), dtype=np.uint8)
    embedder = ImageEmbedder(TINY_CNN, weights="random",
                             cache=tmp_path if cache else None).fit([good])
    for array, message in BAD_ARRAYS:
        with pytest.raises(InputError, match=f"row 1: .*{message}"):
            embedder.transform([good, array])


def test_decompression_bomb_guard_stays_on(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # bomb = over 2000 pixels
    data = _encoded(Image.new("L", (100, 100)))
    with pytest.raises(RowProblem, match="decompression-bomb"):
        load_image(data)
