"""Embedding on Dask, for data that one machine cannot embed in time.

The fitted embedder travels to the workers as its parameters only (no weights); each worker
process loads the backbone once and keeps it for every partition it is given. With
``cache=`` a directory that every worker can reach, work done once is never repeated, by any
worker or any later run.

For grid search, scikit-learn's own route works unchanged: run ``GridSearchCV`` inside
``joblib.parallel_backend("dask")`` with an embedder that has a shared ``cache=``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def embed(embedder: Any, data: Any) -> Any:
    """Embed a Dask Series (or one-column Dask DataFrame) partition by partition.

    Parameters
    ----------
    embedder : ImageEmbedder or TextEmbedder
        Fitted or not; an unfitted one is fitted here (cheap: it only loads the backbone).
    data : dask.dataframe.Series or dask.dataframe.DataFrame with one column
        Image paths/bytes or texts.

    Returns
    -------
    features : dask.dataframe.DataFrame
        One float32 column per feature, named like ``get_feature_names_out()``, with the
        index of ``data``. Nothing is computed until you call ``.compute()`` or write it out.

    Examples
    --------
    >>> import dask.dataframe as dd
    >>> import pandas as pd
    >>> from sktransfer import TextEmbedder
    >>> from sktransfer.dask import embed
    >>> texts = dd.from_pandas(pd.Series(["a fine film", "dull", "tense"]), npartitions=2)
    >>> features = embed(TextEmbedder(), texts)
    >>> features.compute().shape
    (3, 384)
    """
    import dask.dataframe as dd
    import pandas as pd

    if isinstance(data, dd.DataFrame):
        if len(data.columns) != 1:
            raise ValueError(f"expected one column, got {list(data.columns)}")
        data = data[data.columns[0]]
    if not hasattr(embedder, "n_features_out_"):
        embedder.fit(data.head(1, npartitions=-1))
    names = list(embedder.get_feature_names_out())
    meta = pd.DataFrame({name: pd.Series(dtype=np.float32) for name in names})
    return data.map_partitions(_embed_partition, embedder, names, meta=meta)


def _embed_partition(partition: Any, embedder: Any, names: list[str]) -> Any:
    import pandas as pd

    if len(partition) == 0:
        return pd.DataFrame({name: pd.Series(dtype=np.float32) for name in names})
    return pd.DataFrame(embedder.transform(partition), index=partition.index, columns=names)
