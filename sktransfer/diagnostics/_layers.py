"""layer_sweep: how well does each layer of one image backbone transfer?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils._param_validation import HasMethods, validate_params

from sktransfer.diagnostics._common import fixed_splits, fold_scores, supervised_defaults


@dataclass
class LayerSweep:
    """Result of :func:`layer_sweep`: ``table`` has one row per layer (depth order) with
    ``n_features``, ``mean`` and ``std`` of the fold scores; ``best_layer`` is the best one."""

    table: Any
    fold_scores: dict[Any, np.ndarray]
    scoring: str

    @property
    def best_layer(self) -> int | None:
        best = self.table["mean"].idxmax()
        return None if best == "pooled" else int(best)

    def plot(self, ax: Any = None) -> Any:
        """Score (mean ± std over folds) by depth."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        labels = [str(index) for index in self.table.index]
        ax.errorbar(labels, self.table["mean"], yerr=self.table["std"], marker="o", capsize=3)
        ax.set_xlabel("layer (shallow → deep)")
        ax.set_ylabel(self.scoring)
        ax.set_title("Layer sweep")
        return ax

    def __str__(self) -> str:
        return self.table.to_string(float_format=lambda v: f"{v:.3f}")


@validate_params(
    {"X": ["array-like"], "y": ["array-like"], "embedder": [HasMethods(["fit", "transform"])],
     "layers": [None, list], "cv": ["cv_object"], "groups": [None, "array-like"],
     "scoring": [None, str], "head": [None, HasMethods(["fit", "predict"])]},
    prefer_skip_nested_validation=True,
)
def layer_sweep(X: Any, y: Any, embedder: Any, layers: list[int | None] | None = None, *,
                cv: Any = 5, groups: Any = None, scoring: str | None = None,
                head: Any = None) -> LayerSweep:
    """Score every requested layer of one image backbone, from one forward pass per image.

    The backbone runs once over ``X`` with all layers requested together (their pooled
    features concatenated); each layer's block of columns is then scored with the same head on
    the same folds.

    Parameters
    ----------
    X, y : images and targets.
    embedder : ImageEmbedder
        Its model, weights, pooling, cache and device are used; ``layer`` is replaced.
    layers : list of int or None, optional
        Layer indices (and None for the pooled pre-logits output). Default: every layer and
        the pooled output.
    cv, groups, scoring, head : as in :func:`transfer_report`.

    Returns
    -------
    LayerSweep

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import ImageEmbedder
    >>> from sktransfer.diagnostics import layer_sweep
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    >>> y = np.arange(30) % 2
    >>> sweep = layer_sweep(X, y, ImageEmbedder("test_efficientnet", weights="random"), cv=3)
    >>> list(sweep.table.index)
    [0, 1, 2, 3, 4, 'pooled']
    """
    import pandas as pd

    from sktransfer.image import ImageEmbedder

    if not isinstance(embedder, ImageEmbedder):
        raise TypeError("layer_sweep takes an ImageEmbedder")
    head, scoring = supervised_defaults(y, head, scoring)
    if layers is None:
        n_layers = clone(embedder).set_params(layer=None).fit(X[:1]).n_layers_
        layers = [*range(n_layers), None]
    sweep = clone(embedder).set_params(layer=list(layers)).fit(X)
    features = sweep.transform(X)
    splits = fixed_splits(X, y, cv, groups)
    rows, scores = [], {}
    start = 0
    for layer, width in zip(layers, sweep.layer_widths_, strict=True):
        name = "pooled" if layer is None else layer % sweep.n_layers_
        block = features[:, start:start + width]
        start += width
        scores[name], _ = fold_scores(None, block, y, splits, head, scoring)
        rows.append(pd.Series({"n_features": width, "mean": scores[name].mean(),
                               "std": scores[name].std()}, name=name))
    return LayerSweep(table=pd.DataFrame(rows), fold_scores=scores, scoring=scoring)

