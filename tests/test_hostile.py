"""Hostile inputs: each case asserts the exact outcome (a row-naming error, or the right vector).

Silent wrong output is the worst bug a feature extractor can have, so the cases here are the
ones that used to give one (a poisoned cache, stale weights, a wrong scale, a dict read by its
keys, NaN vectors), hang (a FIFO), or exhaust memory (endless files, tall images).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CNN
from PIL import Image

import sktransfer._decode
from sktransfer import FeatureCache, ImageEmbedder, InputError, NonFiniteOutputError


def tiny(**params):
    return ImageEmbedder(TINY_CNN, weights="random", **params)


def png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging: a SIGALRM raises TimeoutError in the main thread."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


RNG = np.random.default_rng(0)
PICTURE_A = RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)
PICTURE_B = RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)


def test_a_file_replaced_during_a_cached_transform_cannot_poison_the_cache(tmp_path,
                                                                          monkeypatch):
    path = png(tmp_path / "photo.png", PICTURE_A)
    bytes_a = Path(path).read_bytes()
    truth_a, truth_b = tiny().fit_transform([PICTURE_A, PICTURE_B])
    real_read = sktransfer._decode.read_image_file

    def replaced_between_hash_and_decode(item):
        png(item, PICTURE_B)  # another process rewrites the file after it was hashed
        return real_read(item)

    monkeypatch.setattr(sktransfer._decode, "read_image_file", replaced_between_hash_and_decode)
    embedder = tiny(cache=tmp_path / "cache")
    np.testing.assert_allclose(embedder.fit_transform([path])[0], truth_b, atol=1e-5)
    monkeypatch.undo()
    # The vector of B was stored under B's bytes, so A's bytes are still a miss.
    np.testing.assert_allclose(embedder.transform([bytes_a])[0], truth_a, atol=1e-5)
    np.testing.assert_allclose(embedder.transform([Path(path).read_bytes()])[0], truth_b,
                               atol=1e-5)


def test_a_checkpoint_overwritten_in_place_is_loaded_again(tmp_path):
    import time

    from safetensors.torch import save_file

    from sktransfer.backbones.timm import _create

    path, other = tmp_path / "weights.safetensors", tmp_path / "second.safetensors"
    first, second = _create(TINY_CNN), _create(TINY_CNN)
    with torch.no_grad():
        for parameter in second.parameters():
            parameter.mul_(-1.5)
    save_file(first.state_dict(), path)
    save_file(second.state_dict(), other)
    before = ImageEmbedder(TINY_CNN, weights=str(path)).fit([PICTURE_A])
    old_vector = before.transform([PICTURE_A])
    time.sleep(0.05)  # a later clock tick: the stamp (size, mtime, ctime, inode) must change
    save_file(second.state_dict(), path)
    after = ImageEmbedder(TINY_CNN, weights=str(path)).fit([PICTURE_A])
    assert after.weights_digest_ != before.weights_digest_
    expected = ImageEmbedder(TINY_CNN, weights=str(other)).fit_transform([PICTURE_A])
    np.testing.assert_array_equal(after.transform([PICTURE_A]), expected)
    assert not np.allclose(expected, old_vector)
    with pytest.raises(Exception, match="refit it"):
        before.transform([PICTURE_A])  # fitted with the old weights: refused, not mixed


def test_pil_mode_i_follows_the_integer_array_rule():
    values = RNG.integers(0, 256, (32, 32))
    as_mode_i = Image.fromarray(values.astype(np.int32))
    assert as_mode_i.mode == "I"
    out = tiny().fit_transform([as_mode_i, values.astype(np.int32), values.astype(np.uint8)])
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)
    with pytest.raises(InputError, match=r"row 0: integer pixel values must lie in 0\.\.255"):
        tiny().fit_transform([Image.fromarray((values * 200).astype(np.int32))])


def test_a_mapping_is_refused_not_read_by_its_keys():
    with pytest.raises(TypeError, match="mapping would be read by its keys"):
        tiny().fit({"a.png": PICTURE_A})


def test_nan_weights_raise_naming_the_model_and_rows(tmp_path):
    from safetensors.torch import save_file

    from sktransfer.backbones.timm import _create

    net = _create(TINY_CNN)
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in net.state_dict().items()}
    path = tmp_path / "nan.safetensors"
    save_file(state, path)
    embedder = ImageEmbedder(TINY_CNN, weights=str(path), backend="torch",
                             cache=tmp_path / "cache")
    with pytest.raises(NonFiniteOutputError,
                       match=r"'test_efficientnet' produced NaN .* rows 0, 1"):
        embedder.fit_transform([PICTURE_A, PICTURE_B])
    assert len(FeatureCache(tmp_path / "cache")) == 0  # nothing wrong was stored


@pytest.mark.parametrize("cached", [False, True])
def test_a_fifo_is_a_row_error_not_a_hang(tmp_path, cached):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    embedder = tiny(cache=tmp_path / "cache" if cached else None)
    with deadline(30), pytest.raises(InputError, match=r"row 1: .*pipe\.png is not a regular file"):
        embedder.fit_transform([PICTURE_A, str(fifo)])


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_devices_are_row_errors(tmp_path, cached, device):
    embedder = tiny(cache=tmp_path / "cache" if cached else None)
    with deadline(30), pytest.raises(InputError, match=f"row 0: {device} is not a regular file"):
        embedder.fit_transform([device])


@pytest.mark.parametrize("cached", [False, True])
def test_a_huge_sparse_file_is_refused_before_it_is_read(tmp_path, cached):
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as handle:
        handle.truncate(6 * 2**30)  # 6 GB of nothing, on no disk space
    embedder = tiny(cache=tmp_path / "cache" if cached else None)
    with deadline(30), pytest.raises(InputError, match=r"row 0: .*huge.png is 6,442,450,944 "
                                                        r"bytes, over the limit of"):
        embedder.fit_transform([str(sparse)])


def test_the_file_size_limit_is_configurable(tmp_path, monkeypatch):
    path = png(tmp_path / "photo.png", PICTURE_A)
    monkeypatch.setenv("SKTRANSFER_MAX_FILE_BYTES", "100")
    with pytest.warns(UserWarning, match="1 of 2 rows"):
        out = tiny(on_error="nan").fit_transform([PICTURE_A, path])
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()
    monkeypatch.setenv("SKTRANSFER_MAX_FILE_BYTES", str(10**6))
    assert np.isfinite(tiny().fit_transform([path])).all()


def test_images_over_the_pixel_limit_are_row_errors(tmp_path, monkeypatch):
    path = png(tmp_path / "big.png", np.zeros((100, 120), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(InputError, match=r"row 0: .*big.png is 120×100 = 12,000 pixels, over "
                                         r"the limit of 10,000 \(PIL.Image.MAX_IMAGE_PIXELS"):
        tiny().fit_transform([path])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    assert np.isfinite(tiny().fit_transform([path])).all()


PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys, warnings
    import numpy as np
    from PIL import Image
    from sktransfer import ImageEmbedder

    path, shape = sys.argv[1], tuple(int(v) for v in sys.argv[2].split("x"))
    Image.fromarray(np.full(shape, 128, np.uint8)).save(path)  # compresses to a few kB
    embedder = ImageEmbedder(on_error="nan").fit([np.zeros((8, 8), np.uint8)])
    embedder.transform([np.zeros((300, 300), np.uint8)])  # model loaded, engine warm

    def status_mb(field):
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith(field))
        return int(line.split()[1]) / 1024

    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak (VmHWM) to the current RSS: loading is not counted
    before = status_mb("VmRSS:")
    # Enforced as well as measured: 1 GiB of address space beyond what the loaded model uses.
    limit = int((status_mb("VmSize:") + 1024) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = embedder.transform([path])
    after = status_mb("VmHWM:")
    failed = [str(w.message)[:400] for w in caught if "could not be embedded" in str(w.message)]
    print(f"growth_mb={after - before:.0f} finite={np.isfinite(out).all()} failed={failed}")
""")


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "refused", "at_least_mb"), [
    ((20000, 1), False, 0), ((1, 20000), False, 0), ((10000, 12000), True, 0),
    ((3000, 4000), False, 30),  # a control: the measurement does see a decoded image
])
def test_peak_memory_of_pathological_images_stays_under_1_gb(tmp_path, shape, refused,
                                                             at_least_mb):
    """1×20,000 and 20,000×1 images are embedded; 12,000×10,000 is over Pillow's warning
    limit and refused as a row error. Each runs in a fresh process with the default model,
    under an address-space limit of 1 GiB beyond the loaded model; the peak is measured from
    the RSS after loading (the kernel's VmHWM, reset there)."""
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "odd.png"),
                             f"{shape[0]}x{shape[1]}"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    growth = float(line.split("growth_mb=")[1].split()[0])
    assert at_least_mb <= growth < 1024, line
    assert ("finite=False" in line and "over the limit" in line) if refused else \
        ("finite=True" in line and "failed=[]" in line), line


def test_a_lone_surrogate_is_a_row_error_not_a_tokenizer_crash():
    from sktransfer import TextEmbedder

    with pytest.raises(InputError, match="row 1: not valid Unicode: an unpaired surrogate"):
        TextEmbedder().fit_transform(["café", "caf\udce9"])
    with pytest.warns(UserWarning, match="1 of 2 rows"):
        out = TextEmbedder(on_error="zeros").fit_transform(["café", "caf\udce9"])
    assert (out[1] == 0).all() and out[0].any()


def test_fit_transform_reads_a_generator_once():
    out = tiny().fit_transform(image for image in [PICTURE_A, PICTURE_B])
    np.testing.assert_array_equal(out, tiny().fit_transform([PICTURE_A, PICTURE_B]))


def test_objects_with_only_the_array_protocol_are_read_as_arrays():
    class Wrapped:
        def __init__(self, array):
            self.array = array

        def __array__(self, dtype=None, copy=None):
            return self.array

    stacked = np.stack([PICTURE_A, PICTURE_B])
    np.testing.assert_array_equal(tiny().fit_transform(Wrapped(stacked)),
                                  tiny().fit_transform(stacked))


@pytest.mark.parametrize("embedder", ["image", "text"])
def test_complex_arrays_are_refused_in_fit(embedder):
    from sktransfer import TextEmbedder

    estimator = tiny() if embedder == "image" else TextEmbedder()
    with pytest.raises(ValueError, match="Complex data not supported"):
        estimator.fit(np.ones((2, 16), dtype=complex))


def test_errors_from_a_dataframe_name_the_column(tmp_path):
    import pandas as pd

    from sktransfer import TextEmbedder
    from sktransfer.compose import make_embedding_transformer

    frame = pd.DataFrame({
        "review": ["A gripping and tender film.", "Dull, slow and far too long.", "   "],
        "photo": [png(tmp_path / "a.png", PICTURE_A), str(tmp_path / "gone.png"), None],
        "year": [2001, 2015, 2020]})
    columns = make_embedding_transformer(frame, image_embedder=tiny())
    with pytest.raises(InputError, match=r"^row 1, column 'photo': file not found"):
        columns.fit_transform(frame)
    text_only = frame.drop(columns="photo")
    # In a table, a blank cell is a gap: zeros and the indicator, as for None (issue #24) ...
    out = make_embedding_transformer(text_only, text_columns=["review"]).set_output(
        transform="pandas").fit_transform(text_only)
    assert out["review__missing"].tolist() == [0.0, 0.0, 1.0]
    assert not out.filter(like="review__textembedder").iloc[2].any()
    # ... while an embedder given a blank text on its own names the row and column.
    with pytest.raises(InputError, match=r"^row 2, column 'review': empty text"):
        TextEmbedder().fit_transform(frame[["review"]])


@pytest.mark.parametrize("damage", ["text file", "truncated", "garbage pages"])
def test_a_broken_cache_database_names_the_file_and_the_fix(tmp_path, damage):
    from sktransfer import CacheError
    from sktransfer.cache import DB_NAME

    folder = tmp_path / "cache"
    tiny(cache=folder).fit_transform([PICTURE_A])
    database = folder / DB_NAME
    for sidecar in folder.glob(DB_NAME + "-*"):
        sidecar.unlink()
    data = database.read_bytes()
    if damage == "text file":
        database.write_text("these are my notes, not a database\n" * 100)
    elif damage == "truncated":
        database.write_bytes(data[:100])
    else:
        database.write_bytes(data[:100] + os.urandom(len(data) - 100))
    fresh = tiny(cache=FeatureCache(folder))
    with pytest.raises(CacheError, match=rf"feature cache .*{DB_NAME}: the database is corrupt "
                                         r"or not a cache .* delete the folder"):
        fresh.fit_transform([PICTURE_A])


def test_cache_naming_a_file_says_it_needs_a_folder(tmp_path):
    from sktransfer import CacheError

    not_a_folder = tmp_path / "features.npy"
    not_a_folder.write_bytes(b"x")
    with pytest.raises(CacheError, match="is a file, not a folder; cache= takes a folder"):
        tiny(cache=not_a_folder).fit_transform([PICTURE_A])


FULL_DISK_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from sktransfer import CacheError, FeatureCache, ImageEmbedder

    folder = sys.argv[1]
    images = list(np.random.default_rng(0).integers(0, 256, (400, 24, 24, 3), dtype=np.uint8))
    embedder = ImageEmbedder("test_efficientnet", weights="random", batch_size=16,
                             cache=folder).fit(images[:1])
    embedder.transform(images[:16])  # the database exists, 16 vectors stored
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, hard))
    try:
        embedder.transform(images)
    except CacheError as error:
        print("error:", error)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    print("kept:", len(FeatureCache(folder)))
""")


def test_a_full_disk_names_the_cache_and_keeps_finished_batches(tmp_path):
    result = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("error: feature cache ") and "a write failed" in lines[0] and \
        "the disk is full or a file-size limit was reached" in lines[0], lines
    assert "cannot rollback" not in result.stdout
    kept = int(lines[-1].split("kept: ")[1])
    assert 16 < kept < 400, lines  # every batch stored before the limit, none after


def test_a_closed_pil_image_is_a_row_error(tmp_path):
    closed = Image.fromarray(PICTURE_A)
    closed.close()
    for cache in (None, tmp_path / "cache"):
        with pytest.raises(InputError, match=r"row 1: this PIL image cannot be read .* closed"):
            tiny(cache=cache).fit_transform([PICTURE_B, closed])


def test_a_lazily_opened_truncated_image_is_a_row_error(tmp_path):
    import io

    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(buffer, "JPEG")
    lazy = Image.open(io.BytesIO(buffer.getvalue()[:3000]))  # nothing decoded yet
    with pytest.raises(InputError, match=r"row 0: this PIL image cannot be read \(image file "
                                         r"is truncated"):
        tiny().fit_transform([lazy])


def test_a_garbage_safetensors_file_is_named(tmp_path):
    garbage = tmp_path / "weights.safetensors"
    garbage.write_bytes(os.urandom(500))
    with pytest.raises(ValueError, match=r"weights\.safetensors is not a readable safetensors "
                                         r"file \(SafetensorError"):
        ImageEmbedder(TINY_CNN, weights=str(garbage)).fit([PICTURE_A])


@pytest.mark.parametrize("name", ["/no/such/model/folder", "./no-such-folder", "~/nowhere/x/y"])
def test_a_missing_local_text_model_folder_says_so(name):
    from sktransfer import ModelUnavailableError, TextEmbedder

    with pytest.raises(ModelUnavailableError, match=f"no model folder at {name}: it does not "
                                                    "exist"):
        TextEmbedder(name).fit(["a fine film"])


def test_an_invalid_hub_id_is_explained():
    from sktransfer import ModelUnavailableError, TextEmbedder

    with pytest.raises(ModelUnavailableError, match="neither a local folder nor a valid "
                                                    "Hugging Face Hub id"):
        TextEmbedder("bad id with spaces/x").fit(["a fine film"])


def test_heic_files_get_a_plugin_hint(tmp_path):
    heic = tmp_path / "phone.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + os.urandom(300))
    with pytest.raises(InputError, match=r"row 0: .*phone\.heic is a HEIC/HEIF image, which "
                                         r"Pillow reads only with a plugin: pip install "
                                         r"pillow-heif"):
        tiny().fit_transform([str(heic)])


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from sktransfer import FeatureCache, TextEmbedder
    from sktransfer.datasets import load_rotten_tomatoes

    texts = list(dict.fromkeys(load_rotten_tomatoes().text))[:3000]
    real_store = FeatureCache.store

    def store(self, space, keys, vectors, description):
        real_store(self, space, keys, vectors, description)
        if len(keys):
            print(f"stored {len(keys)}", flush=True)  # committed: the parent may kill us now

    FeatureCache.store = store
    embedder = TextEmbedder(cache=sys.argv[1]).fit(texts[:1])
    print("start", flush=True)
    embedder.transform(texts)
    print("finished", flush=True)
""")


def test_kill_9_in_the_middle_of_a_cached_transform_keeps_every_finished_batch(tmp_path):
    folder = tmp_path / "cache"
    child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(folder)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stored = []
    try:
        with deadline(300):
            for line in child.stdout:
                if line.startswith("stored"):
                    stored.append(int(line.split()[1]))
                    if len(stored) == 2:
                        child.send_signal(signal.SIGKILL)  # the known point: two batches in
                        break
    finally:
        child.kill()
        child.wait()
    # Every forward batch (32 texts at most) is stored as it finishes, not a chunk of 1,024:
    # a kill loses only the batch in flight.
    assert child.returncode == -signal.SIGKILL and len(stored) == 2
    assert all(1 <= n <= 32 for n in stored), stored
    kept = len(FeatureCache(folder))
    assert sum(stored) <= kept < 3000, kept  # every committed batch, and the work was cut short


def _file(path, data):
    path.write_bytes(data)
    return str(path)


def _jpeg(array, **kwargs):
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


# One bad item next to a good one: (id, the item, the exact problem its row must report).
BAD_IMAGES = [
    ("none", lambda d: None, r"missing image \(None/NaN\)"),
    ("nan", lambda d: float("nan"), r"missing image \(None/NaN\)"),
    ("an int", lambda d: 5, r"unsupported type int; expected a file path, bytes"),
    ("a url", lambda d: "https://example.org/cat.jpg", r"is a URL; sktransfer reads local"),
    ("empty bytes", lambda d: b"", r"empty bytes \(0 bytes\), not an image"),
    ("random bytes", lambda d: os.urandom(300), r"bytes is not an image Pillow can read"),
    ("truncated jpeg bytes", lambda d: _jpeg(PICTURE_A)[:300], r"bytes cannot be decoded"),
    ("a directory", lambda d: str(d), r"is a directory, not an image file"),
    ("a missing file", lambda d: str(d / "gone.png"), r"file not found: .*gone\.png"),
    ("an empty file", lambda d: _file(d / "e.png", b""), r"e\.png is empty \(0 bytes\)"),
    ("text named .jpg", lambda d: _file(d / "t.jpg", b"hello"),
     r"t\.jpg is not an image Pillow can read"),
    ("a dangling symlink", lambda d: os.symlink(d / "nowhere.png", d / "link.png")
     or str(d / "link.png"), r"file not found: .*link\.png"),
    ("a symlink loop", lambda d: os.symlink(d / "loop.png", d / "loop.png")
     or str(d / "loop.png"), r"cannot read .*loop\.png: Too many levels of symbolic links"),
    ("a nul byte in the path", lambda d: "bad\x00name.png", r"cannot read bad\x00name\.png"),
    ("no pixels", lambda d: np.zeros((0, 5, 3), np.uint8), r"array of shape \(0, 5, 3\) has "
     r"no pixels"),
    ("channels first", lambda d: np.zeros((3, 20, 20), np.uint8), r"channels-first\? "
     r"transpose it to H×W×C"),
    ("two channels", lambda d: np.zeros((20, 20, 2), np.uint8), r"array of shape \(20, 20, 2\) "
     r"is not an image"),
    ("five dimensions", lambda d: np.zeros((1, 2, 3, 4, 5), np.uint8), r"is not an image"),
    ("nan floats", lambda d: np.full((8, 8), np.nan), r"array contains NaN or infinite"),
    ("floats over 1", lambda d: np.full((8, 8), 2.5), r"float pixel values must lie in "
     r"\[0, 1\], found 2\.5\.\.2\.5"),
    ("ints over 255", lambda d: np.full((8, 8), 300), r"integer pixel values must lie in "
     r"0\.\.255, found 300\.\.300"),
    ("negative ints", lambda d: np.full((8, 8), -1), r"integer pixel values must lie in 0\.\.255"),
    ("a string array", lambda d: np.full((8, 8), "x"), r"arrays of dtype <U1 are not images"),
    ("complex pixels", lambda d: np.zeros((8, 8), complex), r"arrays of dtype complex128 are "
     r"not images"),
    ("a list", lambda d: [[0, 1], [2, 3]], r"unsupported type list"),
]


@pytest.mark.parametrize(("item", "problem"), [case[1:] for case in BAD_IMAGES],
                         ids=[case[0] for case in BAD_IMAGES])
def test_corpus_of_bad_images(tmp_path, item, problem):
    bad = item(tmp_path)
    with pytest.raises(InputError, match=rf"^row 1: (.*)?{problem}"):
        tiny().fit_transform([PICTURE_A, bad])
    with pytest.warns(UserWarning, match=rf"1 of 2 rows .* row 1: (.*)?{problem}"):
        out = tiny(on_error="zeros").fit_transform([PICTURE_A, bad])
    assert (out[1] == 0).all() and out[0].any()


# Awkward but valid images: each must give exactly the vector of its plain equivalent.
def _same_as(item, reference):
    return item, reference


EQUIVALENT_IMAGES = [
    ("bool array", lambda: _same_as(PICTURE_A[..., 0] > 127,
                                    ((PICTURE_A[..., 0] > 127) * 255).astype(np.uint8))),
    ("uint16 array", lambda: _same_as(PICTURE_A.astype(np.uint16) * 257, PICTURE_A)),
    ("float array", lambda: _same_as(PICTURE_A / 255.0, PICTURE_A)),
    ("H×W×1 array", lambda: _same_as(PICTURE_A[..., :1], PICTURE_A[..., 0])),
    ("non-contiguous view", lambda: _same_as(np.asfortranarray(PICTURE_A), PICTURE_A)),
    ("opaque RGBA", lambda: _same_as(np.dstack([PICTURE_A, np.full((40, 40), 255, np.uint8)]),
                                     PICTURE_A)),
    ("bytearray of a PNG", lambda: _same_as(bytearray(_png_bytes(PICTURE_A)), PICTURE_A)),
    ("memoryview of a PNG", lambda: _same_as(memoryview(_png_bytes(PICTURE_A)), PICTURE_A)),
    ("a PIL image in mode L", lambda: _same_as(Image.fromarray(PICTURE_A[..., 0]),
                                               PICTURE_A[..., 0])),
    ("1×1 pixel", lambda: _same_as(Image.fromarray(PICTURE_A[:1, :1]), PICTURE_A[:1, :1])),
]


def _png_bytes(array):
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", [case[1] for case in EQUIVALENT_IMAGES],
                         ids=[case[0] for case in EQUIVALENT_IMAGES])
def test_corpus_of_awkward_images_gives_the_right_vector(case):
    item, reference = case()
    out = tiny().fit_transform([item, reference])
    np.testing.assert_array_equal(out[0], out[1])


BAD_TEXTS = [
    ("none", None, r"missing text \(None/NaN\)"),
    ("nan", float("nan"), r"missing text \(None/NaN\)"),
    ("empty", "", r"empty text"),
    ("whitespace", " \n\t ", r"empty text"),
    ("an int", 42, r"expected a string, got int 42"),
    ("bytes", b"a fine film", r"expected a string, got bytes"),
    ("a list", ["a", "b"], r"expected a string, got list"),
    ("a lone surrogate", "fin\udcc3 film", r"not valid Unicode: an unpaired surrogate"),
]


@pytest.mark.parametrize(("text", "problem"), [case[1:] for case in BAD_TEXTS],
                         ids=[case[0] for case in BAD_TEXTS])
def test_corpus_of_bad_texts(text, problem):
    from sktransfer import TextEmbedder

    with pytest.raises(InputError, match=rf"^row 1: {problem}"):
        TextEmbedder().fit_transform(["a fine film", text])
    with pytest.warns(UserWarning, match=rf"1 of 2 rows .* row 1: {problem}"):
        out = TextEmbedder(on_error="nan").fit_transform(["a fine film", text])
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()


def test_texts_past_the_model_limit_are_truncated_consistently():
    from sktransfer import TextEmbedder

    long, longer = "a fine film " * 300, "a fine film " * 3000  # both past 256 tokens
    out = TextEmbedder().fit_transform([long, longer])
    np.testing.assert_array_equal(out[0], out[1])


def test_a_cache_database_that_cannot_be_opened_says_so(tmp_path):
    from sktransfer import CacheError
    from sktransfer.cache import DB_NAME

    (tmp_path / "cache" / DB_NAME).mkdir(parents=True)  # something in the way of the file
    with pytest.raises(CacheError, match=rf"{DB_NAME}: it cannot be opened for reading and "
                                         r"writing .*check the permissions"):
        tiny(cache=tmp_path / "cache").fit_transform([PICTURE_A])


def test_the_cli_names_fifos_and_devices_without_hanging(tmp_path, capsys):
    from sktransfer.cli import main

    os.mkfifo(tmp_path / "pipe.png")
    good = png(tmp_path / "good.png", PICTURE_A)
    with deadline(60):
        code = main(["embed", good, str(tmp_path / "pipe.png"), "/dev/zero", "-o",
                     str(tmp_path / "out.parquet"), "--model", TINY_CNN, "--weights", "random",
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "2 of 3 inputs cannot be read; nothing was embedded" in err
    assert "pipe.png is not a regular file" in err and "/dev/zero is not a regular file" in err
    assert not (tmp_path / "out.parquet").exists()
