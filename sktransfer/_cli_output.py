"""Writing the command line's feature files: streamed, bounded in memory, atomic.

Rows arrive a chunk at a time. Parquet gets one row group per chunk; ``.npy`` is a memory map
of the final shape. Either is written to a temporary file beside the target and renamed over
it only when every row is written, so a killed or failed run never leaves a partial file under
the target's name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class FeatureWriter:
    """Write ``n_rows`` × ``names`` float32 features (plus ids and errors) to ``path``.

    Parameters
    ----------
    path : Path
        ``.parquet`` (an ``id`` column, the features, and an ``error`` column when
        ``with_errors``) or ``.npy`` (the bare matrix; errors go to ``<stem>.errors.csv``).
    n_rows, names : the shape of the matrix and the feature names.
    with_errors : bool
        Record why rows could not be embedded (empty where the row is fine).
    """

    def __init__(self, path: Path, n_rows: int, names: list[str], *, with_errors: bool):
        self.path, self.n_rows, self.names = path, n_rows, names
        self.with_errors = with_errors
        self.errors: dict[str, str] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, self.temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                                  suffix=".tmp")
        os.close(handle)
        self._writer: Any = None
        self._matrix: Any = None
        if path.suffix == ".npy":
            self._matrix = np.lib.format.open_memmap(self.temporary, mode="w+",
                                                     dtype=np.float32,
                                                     shape=(n_rows, len(names)))

    def write(self, start: int, ids: list[str], vectors: np.ndarray,
              errors: list[str]) -> None:
        """Rows ``start`` to ``start + len(ids)``; ``errors`` holds "" for the good rows."""
        self.errors.update({i: e for i, e in zip(ids, errors, strict=True) if e})
        if self._matrix is not None:
            self._matrix[start:start + len(ids)] = vectors
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"id": pa.array(ids, pa.string())}
        columns.update({name: pa.array(vectors[:, j]) for j, name in enumerate(self.names)})
        if self.with_errors:
            columns["error"] = pa.array(errors, pa.string())
        table = pa.table(columns)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.temporary, table.schema)
        self._writer.write_table(table)

    def commit(self) -> None:
        """Every row is written: put the file in place (and the errors beside a .npy)."""
        if self._matrix is not None:
            self._matrix.flush()
            del self._matrix
            self._matrix = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.path.suffix == ".npy" and self.with_errors and self.errors:
            import pandas as pd

            sidecar = self.path.with_name(self.path.stem + ".errors.csv")
            pd.DataFrame({"id": list(self.errors), "error": list(self.errors.values())}
                         ).to_csv(sidecar, index=False)
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        """The run failed: remove the temporary file, leave any earlier output alone."""
        if self._writer is not None:
            self._writer.close()
        self._matrix = None
        Path(self.temporary).unlink(missing_ok=True)
