"""FeatureCache: embeddings stored on disk by content, shared by clones, processes and sessions.

Storage is SQLite (an embedded database, in write-ahead-log mode): every write is one
transaction, so it is atomic; concurrent writers from several processes wait for each other
instead of losing rows; a process killed mid-write leaves the last committed state. Each vector
is stored with a CRC32 of its bytes; an entry whose bytes no longer match is reported as
missing, recomputed and overwritten.

Keys are content-addressed: a digest of the sample's content (file bytes, array bytes, text)
inside a *space*, the digest of everything that determines the output (model, weights digest,
preprocessing, layer, pooling, precision, feature version). Renaming a file still hits;
changing any of those never returns a stale vector.

Content digests are BLAKE3 (128 bits kept): a cryptographic hash, so a crafted input cannot be
made to collide with another and read or poison its vector in a shared cache, and about three
times faster than SHA-256 here. Every cached call hashes all of its input again (a grid search
does it twice per fit), so the hash is on the hot path.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from sktransfer._cache_db import (
    WAIT_S,
    explained,
    initialise,
    transaction,
    while_locked,
)

logger = logging.getLogger("sktransfer")

KEY_SCHEME = "blake3-128"  # part of every space: entries keyed another way are never read

DB_NAME = "features.sqlite"
_CHUNK = 500  # keys per SELECT
_TOUCH_EVERY_S = 3600.0  # last-use times are refreshed at most hourly, so reads rarely write


def content_digest(*parts: bytes | bytearray | memoryview) -> bytes:
    """The 16-byte content key of a sample given as byte strings or buffers.

    Examples
    --------
    >>> key = content_digest("a fine film".encode())
    >>> len(key), key == content_digest(b"a fine ", b"film"), key == content_digest(b"a film")
    (16, True, False)
    >>> import numpy as np
    >>> content_digest(np.ones(2).data) == content_digest(np.ones(2).tobytes())
    True
    >>> content_digest(np.zeros((0, 3)).data) == content_digest(b"")
    True
    """
    digest = blake3.blake3()
    for part in parts:
        view = memoryview(part)
        if view.nbytes == 0:  # nothing to hash (and a view with a 0 in its shape cannot cast)
            continue
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        digest.update(view.cast("B"))  # blake3 reads bytes only: float arrays are cast
    return digest.digest(16)


class FeatureCache:
    """An on-disk, content-addressed store of embeddings.

    Pass it (or just a directory path) as ``cache=`` to any embedder. Only the path is pickled,
    so the cache survives ``clone()``, cross-validation, grid search, ``n_jobs`` processes and
    sessions.

    Parameters
    ----------
    path : str or Path
        A directory; it is created when missing and holds one SQLite file.
    memory_bytes : int, default=256 MiB
        Vectors this process has read or written are also kept in memory, up to this many
        bytes (oldest out first), so that grid search reads its folds without touching disk.
        Keys are content digests, so a vector in memory can never be stale. 0 turns it off.

    Examples
    --------
    >>> import tempfile
    >>> from sktransfer import FeatureCache, TextEmbedder
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> embedder = TextEmbedder(cache=cache).fit(["a fine film"])
    >>> first = embedder.transform(["a fine film", "dull"])   # embedded and stored
    >>> again = embedder.transform(["dull", "a fine film"])   # read from the cache
    >>> len(cache), bool((again[::-1] == first).all())
    (2, True)
    >>> cache.clear()
    >>> len(cache)
    0
    """

    def __init__(self, path: str | os.PathLike, memory_bytes: int = 256 * 2**20):
        self.path = cache_path(path)
        self.memory_bytes = _check_memory_bytes(memory_bytes)
        self._local = threading.local()
        self._memory = _MemoryTier(memory_bytes)

    # Only the settings cross process boundaries; connections and memory are per process.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "memory_bytes": self.memory_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        FeatureCache.__init__(self, state["path"], state.get("memory_bytes", 256 * 2**20))

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureCache) and other.path.resolve() == self.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    @property
    def file(self) -> Path:
        return self.path / DB_NAME

    @explained
    def _db(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            return connection
        self.path.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.file, timeout=WAIT_S, isolation_level=None,
                                     check_same_thread=True)
        while_locked(lambda: initialise(connection))
        self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    @explained
    def lookup(self, space: str, keys: Sequence[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``keys`` in ``space``: (float32 array (n, dim), bool array of hits).

        Rows of misses are zeros. A stored entry whose checksum or size is wrong counts as a
        miss (and is logged), so it is recomputed and overwritten.
        """
        found = np.zeros(len(keys), dtype=bool)
        vectors = np.zeros((len(keys), dim), dtype=np.float32)
        if not keys:
            return vectors, found
        in_memory = self._memory.get_many(space, keys, dim)
        if in_memory:
            rows = list(in_memory)
            vectors[rows] = np.stack([in_memory[row] for row in rows])
            found[rows] = True
            if len(rows) == len(keys):
                return vectors, found
        # the rows still to look up, by key (a key found in memory is not looked up again)
        position = {key: i for i, key in enumerate(keys) if i not in in_memory}
        db = self._db()
        hits: list[int] = []
        blobs: list[bytes] = []
        stale: list[bytes] = []
        now = time.time()
        size = dim * 4
        missing = list(position)
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT key, vector, checksum, last_used FROM vectors "
                f"WHERE space = ? AND key IN ({marks})", (space, *chunk)).fetchall()
            for key, blob, checksum, last_used in rows:
                if len(blob) != size or zlib.crc32(blob) != checksum:
                    logger.warning("cache entry %s in %s is corrupt; recomputing it",
                                   bytes(key).hex(), self.file)
                    continue
                hits.append(position[bytes(key)])
                blobs.append(blob)
                if now - last_used > _TOUCH_EVERY_S:
                    stale.append(bytes(key))
        if hits:
            found[hits] = True
            vectors[hits] = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, dim)
            self._memory.put_many(space, [keys[row] for row in hits], vectors[hits])
        if stale:
            with transaction(db):
                db.executemany("UPDATE vectors SET last_used = ? WHERE space = ? AND key = ?",
                               [(now, space, key) for key in stale])
        return vectors, found

    @explained
    def store(self, space: str, keys: Sequence[bytes], vectors: np.ndarray,
              description: dict[str, Any]) -> None:
        """Write ``vectors`` (n, dim) under ``keys`` in one atomic transaction."""
        if not len(keys):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        now = time.time()
        rows = []
        for key, vector in zip(keys, vectors, strict=True):
            blob = vector.tobytes()
            rows.append((space, key, blob, zlib.crc32(blob), now))
        db = self._db()
        self._memory.put_many(space, list(keys), vectors)
        with transaction(db):
            db.execute(
                "INSERT OR IGNORE INTO spaces (space, description, dim, created) "
                "VALUES (?, ?, ?, ?)",
                (space, json.dumps(description, sort_keys=True, default=str),
                 vectors.shape[1], now))
            db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?)", rows)

    @explained
    def __len__(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    @explained
    def info(self) -> dict[str, Any]:
        """Entries, bytes on disk, and one line per space (model configuration).

        Examples
        --------
        >>> import tempfile
        >>> FeatureCache(tempfile.mkdtemp()).info()["entries"]
        0
        """
        db = self._db()
        spaces = [
            {"space": space, "entries": count, "dim": dim, **json.loads(description)}
            for space, description, dim, count in db.execute(
                "SELECT s.space, s.description, s.dim, COUNT(v.key) FROM spaces s "
                "LEFT JOIN vectors v ON v.space = s.space GROUP BY s.space")
        ]
        return {"path": str(self.path), "entries": len(self), "bytes": self.size_bytes(),
                "spaces": spaces}

    def size_bytes(self) -> int:
        """Bytes the cache takes on disk (database plus write-ahead log)."""
        return sum(f.stat().st_size for f in self.path.glob(DB_NAME + "*") if f.is_file())

    @explained
    def prune(self, *, max_bytes: int | None = None, older_than: float | None = None) -> int:
        """Delete entries not used for ``older_than`` seconds, then the least recently used
        until the cache fits in ``max_bytes``. Returns how many entries were deleted."""
        db = self._db()
        before = len(self)
        self._memory.clear()
        if older_than is not None:
            with transaction(db):
                db.execute("DELETE FROM vectors WHERE last_used < ?", (time.time() - older_than,))
        self._compact()
        if max_bytes is not None:
            while self.size_bytes() > max_bytes and len(self):
                average = max(self.size_bytes() // max(len(self), 1), 1)
                excess = max((self.size_bytes() - max_bytes) // average, 1)
                with transaction(db):
                    db.execute(
                        "DELETE FROM vectors WHERE (space, key) IN (SELECT space, key FROM "
                        "vectors ORDER BY last_used LIMIT ?)", (int(excess),))
                self._compact()
        self._drop_empty_spaces()
        return before - len(self)

    @explained
    def clear(self) -> None:
        """Delete every entry."""
        db = self._db()
        self._memory.clear()
        with transaction(db):
            db.execute("DELETE FROM vectors")
            db.execute("DELETE FROM spaces")
        self._compact()

    def _drop_empty_spaces(self) -> None:
        db = self._db()
        with transaction(db):
            db.execute("DELETE FROM spaces WHERE space NOT IN (SELECT DISTINCT space FROM vectors)")

    def _compact(self) -> None:
        db = self._db()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class _MemoryTier:
    """Vectors by (space, key) within a byte budget; the oldest go first."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.vectors: dict[tuple[str, bytes], np.ndarray] = {}
        self.lock = threading.Lock()

    def get_many(self, space: str, keys: Sequence[bytes], dim: int) -> dict[int, np.ndarray]:
        if not self.vectors:
            return {}
        with self.lock:
            hits = {row: self.vectors.get((space, key)) for row, key in enumerate(keys)}
        return {row: v for row, v in hits.items() if v is not None and len(v) == dim}

    def put_many(self, space: str, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        if self.budget <= 0 or not len(keys):
            return
        with self.lock:
            for key, vector in zip(keys, vectors, strict=True):
                if (space, key) not in self.vectors:
                    # an own copy: the caller cannot change it, and its bytes are counted
                    self.vectors[(space, key)] = np.array(vector, dtype=np.float32)
                    self.used += vector.nbytes
            while self.used > self.budget and self.vectors:
                oldest = next(iter(self.vectors))
                self.used -= self.vectors.pop(oldest).nbytes

    def clear(self) -> None:
        with self.lock:
            self.vectors.clear()
            self.used = 0


def cache_path(path: Any) -> Path:
    """``path`` as a cache folder, or a ValueError naming the parameter (a NUL byte, which
    no file system takes, would otherwise fail deep inside ``os`` with no name attached)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"cache path must be a str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "\0" in text:
        raise ValueError(f"cache path {text!r} contains a NUL byte, which no file name can "
                         "hold")
    if not text:
        raise ValueError("cache path is empty: name a folder")
    return Path(text).expanduser()


def _check_memory_bytes(memory_bytes: Any) -> int:
    if isinstance(memory_bytes, bool) or not isinstance(memory_bytes, (int, np.integer)):
        raise TypeError(f"memory_bytes must be a whole number of bytes (for example "
                        f"512 * 2**20), got {type(memory_bytes).__name__} {memory_bytes!r}")
    if memory_bytes < 0:
        raise ValueError(f"memory_bytes must be 0 (off) or more, got {memory_bytes}")
    return int(memory_bytes)


_OPEN: dict[Path, FeatureCache] = {}
_OPEN_LOCK = threading.Lock()


def as_feature_cache(cache: str | os.PathLike[str] | FeatureCache | None) -> FeatureCache | None:
    """The FeatureCache for an embedder's ``cache=`` value (one object per directory)."""
    if cache is None or isinstance(cache, FeatureCache):
        return cache
    path = cache_path(cache).resolve()
    with _OPEN_LOCK:
        if path not in _OPEN:
            _OPEN[path] = FeatureCache(path)
        return _OPEN[path]
