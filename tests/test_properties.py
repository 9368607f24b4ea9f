"""Property-based tests of the input layer: whatever comes in, the answer is a correct result
or a named error (``InputError``, ``ValueError``, ``TypeError`` from parameter validation,
``NotFittedError``) with a message, never another exception.

Every test here is marked ``fuzz``. The default run tries a bounded number of examples each;
``./run.sh test -m fuzz`` runs only these, with many more (see ``conftest.py``).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings

import numpy as np
import pytest
from conftest import TINY_CNN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from sklearn.exceptions import NotFittedError

from sktransfer import EmbeddingWarning, ImageEmbedder, InputError, TextEmbedder

pytestmark = pytest.mark.fuzz

NAMED = (InputError, ValueError, TypeError, NotFittedError)
QUIET = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])


def image_embedder(**params):
    return ImageEmbedder(TINY_CNN, weights="random", backend="torch", precision="float32",
                         **params)


def outcome(call):
    """The result of ``call()``, or the named error it raised; any other exception fails."""
    try:
        return call()
    except NAMED as error:
        assert str(error).strip(), f"{type(error).__name__} without a message"
        return error


def check_vectors(result, n_rows, width):
    if isinstance(result, Exception):
        return
    assert result.dtype == np.float32 and result.shape == (n_rows, width)
    assert np.isfinite(result).all()


DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int32, np.int64, np.float16,
                          np.float32, np.float64, np.bool_, np.complex64])


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=12))
    if dtype.kind == "f":
        elements = st.one_of(st.floats(0, 1, width=dtype.itemsize * 8),
                             st.sampled_from([np.nan, np.inf, -np.inf, -0.5, 2.0]))
    else:
        elements = None
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    if draw(st.booleans()) and array.ndim >= 2:  # strides that are not C order
        array = np.swapaxes(array, 0, 1)
    if draw(st.booleans()):
        array = array[::2]
    return array


@QUIET
@given(arrays())
def test_any_array_gives_vectors_or_a_named_error(array):
    embedder = image_embedder()
    result = outcome(lambda: embedder.fit_transform(array))
    if not isinstance(result, Exception):
        assert result.shape[1] == embedder.n_features_out_
        check_vectors(result, result.shape[0], embedder.n_features_out_)


def _encoded(fmt):
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), 127, np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


REAL_FILES = [_encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")]


@st.composite
def image_bytes(draw):
    """Arbitrary bytes, or a real image file cut, spliced or with bytes flipped."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2000))
    data = bytearray(draw(st.sampled_from(REAL_FILES)))
    cut = draw(st.integers(0, len(data)))
    data = data[:cut] + draw(st.binary(max_size=200))
    for position in draw(st.lists(st.integers(0, max(len(data) - 1, 0)), max_size=5)):
        if data:
            data[position] ^= 0xFF
    return bytes(data)


@QUIET
@given(image_bytes(), st.booleans())
def test_any_bytes_as_an_image_file_give_vectors_or_a_named_error(data, as_file):
    embedder = image_embedder().fit([np.zeros((8, 8), np.uint8)])
    with tempfile.TemporaryDirectory() as folder:
        item = data
        if as_file:
            item = os.path.join(folder, "image.png")
            with open(item, "wb") as handle:
                handle.write(data)
        result = outcome(lambda: embedder.transform([item]))
        if isinstance(result, Exception):
            assert isinstance(result, InputError) and result.row == 0, result
        check_vectors(result, 1, embedder.n_features_out_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmbeddingWarning)  # the fill is announced
            filled = image_embedder(on_error="zeros").fit([item]).transform([item, item])
        check_vectors(filled, 2, embedder.n_features_out_)


@pytest.fixture(scope="module")
def text_embedder():
    return TextEmbedder(precision="float32").fit(["a"])


@QUIET
@given(st.lists(st.one_of(st.text(max_size=60), st.text(st.characters(
    categories=["Cs", "Cc", "Zs", "So"]), max_size=20), st.none(), st.floats(),
    st.integers()), min_size=1, max_size=6))
def test_any_texts_give_vectors_or_a_named_error(text_embedder, texts):
    result = outcome(lambda: text_embedder.transform(texts))
    if isinstance(result, Exception):
        assert isinstance(result, InputError), result
    check_vectors(result, len(texts), 384)


@QUIET
@given(st.text(min_size=1, max_size=40))
def test_any_file_name_gives_vectors_or_a_row_error(name):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        # a name this file system cannot hold is not written: it must still be a row error
        with contextlib.suppress(OSError, ValueError, UnicodeEncodeError):
            Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(path, format="PNG")
        embedder = image_embedder().fit([np.zeros((8, 8), np.uint8)])
        result = outcome(lambda: embedder.transform([path]))
        if isinstance(result, Exception):
            assert isinstance(result, InputError) and result.row == 0, result
        check_vectors(result, 1, embedder.n_features_out_)


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                   st.floats(allow_nan=True), st.text(max_size=10),
                   st.lists(st.integers(-5, 300), max_size=4),
                   st.tuples(st.integers(0, 3000), st.integers(0, 3000)))
PREPROCESSING_KEYS = st.sampled_from(["input_size", "interpolation", "mean", "std",
                                      "crop_pct", "crop_mode", "resize"])
MODEL_ARGS_KEYS = st.sampled_from(["img_size", "drop_rate", "in_chans", "act_layer",
                                   "global_pool", "drop_path_rate", "nonsense"])


@QUIET
@given(st.dictionaries(PREPROCESSING_KEYS, VALUES, max_size=3),
       st.dictionaries(MODEL_ARGS_KEYS, VALUES, max_size=2))
def test_any_preprocessing_and_model_args_give_vectors_or_a_named_error(preprocessing,
                                                                        model_args):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    embedder = image_embedder(preprocessing=preprocessing, model_args=model_args)
    result = outcome(lambda: embedder.fit_transform(pixels))
    if not isinstance(result, Exception):
        check_vectors(result, 2, embedder.n_features_out_)


LABELS = st.one_of(st.integers(-3, 3), st.sampled_from(["cat", "dog", ""]), st.none(),
                   st.floats(), st.booleans(), st.lists(st.integers(0, 1), max_size=2))


@QUIET
@given(st.one_of(st.lists(LABELS, min_size=20, max_size=20),
                 st.lists(st.sampled_from([0, 1, "cat", "dog", None, 2.5]), min_size=20,
                          max_size=20),
                 st.lists(st.sampled_from(["cat", "dog"]), min_size=20, max_size=20),
                 st.lists(LABELS, max_size=24),
                 hnp.arrays(st.sampled_from([np.int64, np.float64, np.bool_]),
                            st.sampled_from([(20,), (20, 2), (19,), (0,)]))))
def test_any_y_for_fine_tuning_gives_a_model_or_a_named_error(y):
    from sktransfer.finetune import FineTunedImageClassifier

    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    model = FineTunedImageClassifier(TINY_CNN, weights="random", max_epochs=0,
                                     random_state=0)
    result = outcome(lambda: model.fit(images, y))
    if not isinstance(result, Exception):
        proba = model.predict_proba(images)
        assert proba.shape == (20, len(model.classes_)) and np.isfinite(proba).all()
