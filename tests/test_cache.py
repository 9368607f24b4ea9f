"""FeatureCache: content keys, identity spaces, atomic and concurrent writes, corruption."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import TINY_CNN
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

import sktransfer._base
import sktransfer._decode
from sktransfer import FeatureCache, ImageEmbedder, TextEmbedder
from sktransfer.cache import DB_NAME


def images(n=6, seed=0, size=40):
    return list(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def tiny(cache, **params):
    return ImageEmbedder(TINY_CNN, weights="random", cache=cache, **params)


def test_second_transform_reads_the_cache(tmp_path, embedded):
    X = images()
    embedder = tiny(tmp_path).fit(X)
    first = embedder.transform(X)
    assert embedded == [6]
    np.testing.assert_array_equal(embedder.transform(X), first)
    assert embedded == [6]  # nothing recomputed
    mixed = embedder.transform([*X[:3], *images(2, seed=1)])
    assert embedded == [6, 2]
    np.testing.assert_array_equal(mixed[:3], first[:3])
    assert len(FeatureCache(tmp_path)) == 8


def test_cache_survives_clone_pickle_and_a_feature_cache_object(tmp_path, embedded):
    X = images()
    tiny(str(tmp_path)).fit_transform(X)
    assert embedded == [6]
    clone(tiny(str(tmp_path))).fit_transform(X)
    pickle.loads(pickle.dumps(tiny(str(tmp_path)).fit(X))).transform(X)
    cache = FeatureCache(tmp_path)
    copied = pickle.loads(pickle.dumps(cache))
    assert copied == cache and repr(copied) == f"FeatureCache({str(tmp_path)!r})"
    clone(tiny(cache)).fit_transform(X)
    tiny(copied).fit_transform(X[::-1])  # order does not matter
    assert embedded == [6]


def test_grid_search_embeds_each_sample_once(tmp_path, embedded):
    X = images(24)
    y = np.arange(24) % 2
    pipe = make_pipeline(tiny(tmp_path), LogisticRegression(max_iter=200))
    GridSearchCV(pipe, {"logisticregression__C": [0.1, 1, 10]}, cv=3).fit(X, y)
    assert sum(embedded) == 24


def test_identical_samples_in_one_call_are_embedded_once(embedded):
    X = images(3)
    out = tiny(None).fit_transform([X[0], X[1], X[0], X[2], X[0].copy()])
    assert embedded == [3]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[4])


def test_without_a_cache_files_are_read_once(photo_files, embedded, monkeypatch):
    from pathlib import Path

    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    out = tiny(None).fit_transform([photo_files[0], photo_files[1], str(photo_files[0])])
    assert reads == [] and embedded == [2]  # same path twice: embedded once, nothing re-read
    np.testing.assert_array_equal(out[0], out[2])


def test_renamed_file_hits_and_changed_content_misses(tmp_path, embedded, photo_files):
    cache = tmp_path / "cache"
    first = tiny(cache).fit_transform([photo_files[0]])
    moved = tmp_path / "renamed.jpg"
    shutil.copy(photo_files[0], moved)
    np.testing.assert_array_equal(tiny(cache).fit_transform([moved]), first)
    np.testing.assert_array_equal(tiny(cache).fit_transform([moved.read_bytes()]), first)
    assert embedded == [1]
    Image.open(photo_files[1]).save(moved)  # same name, other picture
    changed = tiny(cache).fit_transform([moved])
    assert embedded == [1, 1] and not np.allclose(changed, first)


def test_file_digests_are_reused_only_while_the_file_is_unchanged(tmp_path, monkeypatch):
    from sktransfer._decode import _FileDigests
    from sktransfer.cache import content_digest

    reads = []
    real = sktransfer._decode._open_image_file
    monkeypatch.setattr(sktransfer._decode, "_open_image_file",
                        lambda path: reads.append(path) or real(path))
    digests = _FileDigests()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"a" * 100)
    first = digests.get(photo)
    assert first == content_digest(b"encoded:", b"a" * 100)
    assert digests.get(photo) == first and len(reads) == 2  # just written: read every time
    time.sleep(2.1)  # now older than settled_ns
    assert digests.get(photo) == first and len(reads) == 3
    assert digests.get(str(photo)) == first and len(reads) == 3  # remembered
    stat = photo.stat()
    photo.write_bytes(b"b" * 100)  # same size, and the old mtime put back
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert photo.stat().st_mtime_ns == stat.st_mtime_ns
    assert digests.get(photo) == content_digest(b"encoded:", b"b" * 100) and len(reads) == 4
    assert digests.get(tmp_path / "missing.jpg") is None


def test_cached_transform_of_settled_files_reads_no_file(tmp_path, embedded, photo_files,
                                                          monkeypatch):
    from sktransfer._decode import _FILE_DIGESTS

    monkeypatch.setattr(_FILE_DIGESTS, "settled_ns", 0)
    first = tiny(tmp_path).fit_transform(photo_files)
    reads = []
    real = sktransfer._decode._open_image_file
    monkeypatch.setattr(sktransfer._decode, "_open_image_file",
                        lambda path: reads.append(path) or real(path))
    np.testing.assert_array_equal(tiny(tmp_path).fit_transform(photo_files[::-1]), first[::-1])
    assert reads == [] and embedded == [len(photo_files)]


VARIANTS = {
    "model": dict(model="test_convnext"),
    "weights": dict(weights="pretrained", model="tf_efficientnet_lite0.packaged"),
    "layer": dict(layer=2),
    "pooling": dict(pooling="max"),
    "precision": dict(precision="bfloat16"),
    "backend": dict(backend="torch", precision="float32"),
    "decode": dict(decode="full"),
}


@pytest.mark.parametrize("field", VARIANTS)
def test_every_identity_field_changes_the_key(tmp_path, embedded, field):
    X = images(2)
    base = dict(model=TINY_CNN, weights="random")
    ImageEmbedder(**base, cache=tmp_path).fit_transform(X)
    if field == "weights":  # same architecture, other weights
        base = dict(model="tf_efficientnet_lite0", weights="random")
        ImageEmbedder(**base, cache=tmp_path).fit_transform(X)
    params = {**base, **VARIANTS[field]}
    variant = ImageEmbedder(**params, cache=tmp_path).fit_transform(X)
    reference = ImageEmbedder(**params).fit_transform(X)
    np.testing.assert_array_equal(variant, reference)
    assert embedded[-2:] == [2, 2]  # the variant was computed, never read from another space


def test_preprocessing_and_feature_version_are_part_of_the_key(tmp_path, monkeypatch):
    embedder = tiny(tmp_path).fit(images(1))
    backbone = embedder._get_backbone()
    space, description = embedder._space(backbone, embedder._plan(backbone))
    assert description["preprocessing"]["crop_pct"] == backbone.data_config["crop_pct"]
    monkeypatch.setitem(backbone.data_config, "crop_pct", 0.5)
    changed, _ = embedder._space(backbone, embedder._plan(backbone))
    monkeypatch.undo()
    monkeypatch.setattr(sktransfer._base, "FEATURES_VERSION", 2)
    bumped, _ = embedder._space(backbone, embedder._plan(backbone))
    assert len({space, changed, bumped}) == 3


def test_array_keys_cover_dtype_shape_and_bytes_of_any_layout():
    from sktransfer._decode import image_content_key

    grey = np.random.default_rng(0).integers(0, 256, (8, 6), dtype=np.uint8)
    key = image_content_key(grey)
    assert image_content_key(grey.copy()) == key
    assert image_content_key(np.asfortranarray(grey)) == key  # layout is not content
    assert image_content_key(grey.T.T[:, :]) == key
    others = [grey.astype(np.float64), grey.astype(np.float32) / 255, grey.reshape(6, 8),
              grey[:, ::-1], grey.astype(bool), np.stack([grey] * 3, axis=-1)]
    keys = [image_content_key(other) for other in others]
    assert all(isinstance(k, bytes) and len(k) == 16 for k in keys)
    assert len({key, *keys}) == 1 + len(others)


def test_the_key_scheme_is_part_of_the_space(tmp_path, monkeypatch):
    embedder = tiny(tmp_path).fit(images(1))
    backbone = embedder._get_backbone()
    space, description = embedder._space(backbone, embedder._plan(backbone))
    assert description["keys"] == "blake3-128"
    monkeypatch.setattr(sktransfer._base, "KEY_SCHEME", "sha256-128")
    assert embedder._space(backbone, embedder._plan(backbone))[0] != space


def test_text_identity_includes_normalize(tmp_path, embedded):
    texts = ["a fine film", "dull"]
    unit = TextEmbedder(cache=tmp_path).fit_transform(texts)
    raw = TextEmbedder(cache=tmp_path, normalize=False).fit_transform(texts)
    assert embedded == [2, 2]  # another normalize setting is another space
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    again = TextEmbedder(cache=tmp_path, normalize=False).fit_transform(texts[::-1])
    np.testing.assert_array_equal(again[::-1], raw)
    np.testing.assert_array_equal(TextEmbedder(cache=tmp_path).fit_transform(texts), unit)
    assert embedded == [2, 2]


def test_failed_rows_are_not_cached(tmp_path, embedded, bad_files):
    X = [*images(2), bad_files["truncated"]]
    with pytest.warns(UserWarning, match="1 of 3 rows"):
        tiny(tmp_path, on_error="zeros").fit_transform(X)
    assert len(FeatureCache(tmp_path)) == 2
    with pytest.warns(UserWarning, match="1 of 3 rows"):
        tiny(tmp_path, on_error="zeros").fit_transform(X)
    assert embedded == [3, 1]


def test_corrupt_entry_is_detected_and_recomputed(tmp_path, embedded, caplog):
    X = images(3)
    disk_only = FeatureCache(tmp_path, memory_bytes=0)  # as a new process would read it
    first = tiny(disk_only).fit_transform(X)
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("UPDATE vectors SET vector = zeroblob(length(vector)) WHERE key = "
                   "(SELECT key FROM vectors LIMIT 1)")
    with caplog.at_level("WARNING", logger="sktransfer"):
        again = tiny(disk_only).fit_transform(X)
    assert "corrupt" in caplog.text
    assert embedded == [3, 1]
    np.testing.assert_allclose(again, first, atol=1e-6)
    tiny(disk_only).fit_transform(X)
    assert embedded == [3, 1]  # the overwritten entry is valid again


def test_reads_are_vectorised(tmp_path):
    keys = [os.urandom(16) for _ in range(1200)]
    vectors = np.random.default_rng(0).normal(size=(1200, 8)).astype(np.float32)
    FeatureCache(tmp_path).store("space", keys, vectors, {"what": "test"})
    cache = FeatureCache(tmp_path)  # a fresh process's view: nothing in memory yet
    statements: list[str] = []
    cache._db().set_trace_callback(statements.append)
    found_vectors, found = cache.lookup("space", keys, 8)
    cache._db().set_trace_callback(None)
    assert found.all()
    np.testing.assert_array_equal(found_vectors, vectors)
    assert sum(s.startswith("SELECT") for s in statements) == 3  # 1200 keys, 500 per query


def test_memory_tier_serves_repeated_reads_within_its_budget(tmp_path):
    keys = [os.urandom(16) for _ in range(100)]
    vectors = np.random.default_rng(0).normal(size=(100, 64)).astype(np.float32)
    FeatureCache(tmp_path).store("space", keys, vectors, {})
    cache = FeatureCache(tmp_path, memory_bytes=50 * 64 * 4)  # room for 50 vectors
    statements: list[str] = []
    cache._db().set_trace_callback(statements.append)
    cache.lookup("space", keys[:40], 64)
    assert sum(s.startswith("SELECT") for s in statements) == 1
    statements.clear()
    again, found = cache.lookup("space", keys[:40], 64)
    assert found.all() and not statements  # from memory, no SQL at all
    np.testing.assert_array_equal(again, vectors[:40])
    cache.lookup("space", keys, 64)  # 100 vectors through a 50-vector budget
    assert cache._memory.used <= 50 * 64 * 4
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.memory_bytes == cache.memory_bytes and copy._memory.used == 0


def test_info_prune_and_clear(tmp_path):
    cache = FeatureCache(tmp_path)
    rng = np.random.default_rng(0)
    for space in ("a", "b"):
        keys = [os.urandom(16) for _ in range(500)]
        cache.store(space, keys, rng.normal(size=(500, 256)).astype(np.float32),
                    {"model": space})
    info = cache.info()
    assert info["entries"] == 1000 and info["bytes"] > 1000 * 1024
    assert sorted((s["model"], s["entries"], s["dim"]) for s in info["spaces"]) == [
        ("a", 500, 256), ("b", 500, 256)]
    with sqlite3.connect(cache.file) as db:  # space "a" was last used a day ago
        db.execute("UPDATE vectors SET last_used = last_used - 86400 WHERE space = 'a'")
    assert cache.prune(older_than=3600) == 500
    assert [s["model"] for s in cache.info()["spaces"]] == ["b"]
    limit = cache.size_bytes() // 2
    removed = cache.prune(max_bytes=limit)
    assert 0 < removed < 500 and cache.size_bytes() <= limit
    cache.clear()
    assert len(cache) == 0 and cache.info()["spaces"] == []


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from sktransfer.cache import FeatureCache
    cache = FeatureCache(sys.argv[1])
    first, last, rounds = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    for r in range(rounds):
        for start in range(first, last, 50):
            ids = range(start, min(start + 50, last))
            keys = [i.to_bytes(16, "big") for i in ids]
            vectors = np.array([np.full(64, i, dtype=np.float32) for i in ids])
            cache.store("space", keys, vectors, {"writer": sys.argv[2]})
    print("done")
""")


OPENER = textwrap.dedent("""
    import os, sys, time, numpy as np
    from sktransfer.cache import FeatureCache
    time.sleep(max(float(sys.argv[2]) - time.time(), 0))  # all start at the same moment
    FeatureCache(sys.argv[1]).store("space", [os.getpid().to_bytes(16, "big")],
                                    np.ones((1, 4), dtype=np.float32), {})
    print("done")
""")


def test_processes_opening_a_new_cache_at_the_same_moment_all_succeed(tmp_path):
    # Switching a new database to WAL mode is not covered by SQLite's busy timeout: before the
    # retry, about one process in five failed with "database is locked".
    script = tmp_path / "opener.py"
    script.write_text(OPENER)
    for round_ in range(4):
        folder, start = tmp_path / f"cache{round_}", time.time() + 2.0
        procs = [subprocess.Popen([sys.executable, str(script), str(folder), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outcomes = [proc.communicate(timeout=300) for proc in procs]
        assert [out for out, _ in outcomes] == ["done\n"] * 4, [err for _, err in outcomes]
        assert len(FeatureCache(folder)) == 4


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "c"), a, b, "20"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a, b in (("0", "3000"), ("1500", "4500"))]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and "done" in out, err
    cache = FeatureCache(tmp_path / "c")
    keys = [i.to_bytes(16, "big") for i in range(4500)]
    vectors, found = cache.lookup("space", keys, 64)
    assert found.all() and len(cache) == 4500
    np.testing.assert_array_equal(vectors[:, 0], np.arange(4500, dtype=np.float32))


def test_a_process_killed_mid_write_leaves_a_readable_cache(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "c"), "0", "200000",
                             "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db_file = tmp_path / "c" / DB_NAME
    deadline = time.time() + 60
    while time.time() < deadline and (not db_file.exists() or db_file.stat().st_size < 300_000):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db_file) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cache = FeatureCache(tmp_path / "c")
    stored = len(cache)
    assert 0 < stored < 200000 and stored % 50 == 0  # whole transactions only
    keys = [i.to_bytes(16, "big") for i in range(stored)]
    vectors, found = cache.lookup("space", keys, 64)
    assert found.all()
    np.testing.assert_array_equal(vectors[:, 63], np.arange(stored, dtype=np.float32))
    cache.store("space", [b"x" * 16], np.ones((1, 64), dtype=np.float32), {})
    assert len(cache) == stored + 1
