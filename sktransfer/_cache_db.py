"""SQLite plumbing of the feature cache: schema, opening under contention, one transaction
per write, and errors that name the file and the fix."""

from __future__ import annotations

import contextlib
import errno
import functools
import sqlite3
import time
from pathlib import Path
from typing import Any

from sktransfer.exceptions import CacheError

WAIT_S = 120.0  # how long a process waits for another's lock before it gives up
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spaces (
    space TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    dim INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    space TEXT NOT NULL,
    key BLOB NOT NULL,
    vector BLOB NOT NULL,
    checksum INTEGER NOT NULL,
    last_used REAL NOT NULL,
    PRIMARY KEY (space, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_last_used ON vectors (last_used);
"""


def explained(method: Any) -> Any:
    """Turn SQLite's and the file system's errors into a CacheError naming the file and fix."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except CacheError:
            raise
        except (sqlite3.Error, OSError) as error:
            raise CacheError(f"feature cache {self.file}: {_advice(error, self.path)}") from error
    return wrapper


def _advice(error: Exception, folder: Path) -> str:
    """What went wrong and what to do, from SQLite's extended error name (or the OS error)."""
    text = str(error)
    name = getattr(error, "sqlite_errorname", "") or ""
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        return f"{folder} is a file, not a folder; cache= takes a folder ({text})"
    if name == "SQLITE_FULL" or "WRITE" in name or "FSYNC" in name or \
            getattr(error, "errno", None) in (errno.ENOSPC, errno.EFBIG):
        return (f"a write failed ({text}): the disk is full or a file-size limit was reached "
                "(or the disk is failing); vectors stored before stay readable; free space or "
                "point cache= at another disk")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR")):
        return (f"the database is corrupt or not a cache ({text}); it holds only derived "
                f"vectors: delete the folder {folder}, or point cache= elsewhere")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")) or \
            isinstance(error, PermissionError):
        return (f"it cannot be opened for reading and writing ({text}); check the "
                "permissions of the folder and its files")
    return f"{type(error).__name__} ({name or 'no code'}): {text}"


def initialise(connection: sqlite3.Connection) -> None:
    """Write-ahead-log mode and the tables, on a new or existing database."""
    if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        connection.execute("PRAGMA journal_mode=WAL")  # persistent: once per database
    connection.execute("PRAGMA synchronous=NORMAL")
    with transaction(connection):
        for statement in filter(str.strip, _SCHEMA.split(";")):
            connection.execute(statement)


def while_locked(work: Any) -> Any:
    """Run ``work``, again while SQLite says the database is locked, for up to ``WAIT_S``.

    The busy timeout covers ordinary reads and writes, but not every lock change: switching a
    database that several processes open at the same moment to write-ahead-log mode fails at
    once with "database is locked" (measured: 18 of 90 processes started together on a new
    cache). Retrying with a growing pause until the others are done is enough.
    """
    deadline = time.monotonic() + WAIT_S
    pause = 0.005
    while True:
        try:
            return work()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 0.25)


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error: one atomic write."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is None:
            try:
                self.connection.execute("COMMIT")
                return
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    self.connection.execute("ROLLBACK")
                raise
        # SQLite may have rolled back by itself (a full disk): the original error matters.
        with contextlib.suppress(sqlite3.Error):
            self.connection.execute("ROLLBACK")
