"""What the frozen layers compute, computed once per fit.

Fine-tuning unfreezes layer groups from the top, so at any epoch the groups below the lowest
trainable one are frozen: their output for a row does not change until that group unfreezes.

- :class:`FeatureStore` keeps the penultimate features, for the probe and head-only epochs.
- :class:`ActivationStore` keeps the activations entering each trainable depth's lowest
  group (a *boundary*), for networks that split at their group boundaries
  (:class:`~sktransfer.backbones._contract.Stages`). Every boundary the recipe will reach is
  computed in one pass through the frozen stages and stored (float32, so training on it is
  exactly training on the recomputed activations) as far as
  :data:`ACTIVATION_BUDGET` allows, the boundaries used first taking precedence; a stale one
  (its stages since trained) is freed. A boundary that does not fit is computed when its
  epoch comes, from the nearest stored boundary below it, or, if even it alone does not
  fit, the frozen layers run every epoch (one log line says so).

Both compute in eval mode, as the frozen layers run while training (batch norm frozen);
a network with batch norm in training mode, dropout or stochastic depth in its frozen layers
is recomputed instead, since its frozen output changes from epoch to epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from sktransfer.backbones._contract import Stages

logger = logging.getLogger("sktransfer")

# bytes of stored boundary activations per fit: ELPV's 500 photos at every depth of
# EfficientNet-Lite0 take 1.8 GB, its top six boundaries 0.7 GB
ACTIVATION_BUDGET = 1 << 30


class FeatureStore:
    """The penultimate features (``module.embed``) of the frozen network, computed once per
    row on first use, from un-augmented inputs. Valid while no backbone parameter has
    changed: the caller stops using it once one has. With ``activations``, the first use
    computes every row's features in the pass that stores the boundaries, so that no frozen
    layer runs twice for a row."""

    def __init__(self, net: Any, batches: Callable[..., Any], items: Sequence[Any],
                 device: str, activations: ActivationStore | None = None):
        self.net, self.batches, self.items, self.device = net, batches, items, device
        self.activations = activations
        self._rows: dict[int, np.ndarray] = {}

    def features(self, rows: np.ndarray) -> np.ndarray:
        missing = np.asarray([row for row in rows if int(row) not in self._rows], dtype=int)
        if len(missing) and self.activations is not None:
            self._rows.update(self.activations.penultimate())
            missing = np.asarray([row for row in rows if int(row) not in self._rows],
                                 dtype=int)
        if len(missing):
            with _evaluating(self.net), torch.inference_mode():
                for positions, inputs in self.batches(self.items, missing, rng=None,
                                                      device=self.device):
                    vectors = self.net.embed(inputs).float().cpu().numpy()
                    self._rows.update(zip((int(p) for p in positions), vectors, strict=True))
        return np.stack([self._rows[int(row)] for row in rows])


class ActivationStore:
    """The activations at the boundaries ``boundaries`` (in the order training reaches
    them: from the top down) of ``rows`` (training and validation), see the module
    docstring. ``get`` answers for a boundary that ``prepare`` made ready."""

    def __init__(self, net: Any, stages: Stages, batches: Callable[..., Any],
                 items: Sequence[Any], rows: np.ndarray, boundaries: Sequence[int], *,
                 device: str, batch_size: int, budget: int | None = None):
        self.net, self.stages, self.batches, self.items = net, stages, batches, items
        self.device, self.batch_size = device, batch_size
        self.budget = ACTIVATION_BUDGET if budget is None else budget
        self.rows = np.sort(np.asarray(rows, dtype=int))
        self.slot = {int(row): i for i, row in enumerate(self.rows)}
        self.order = list(boundaries)
        self.stored: dict[int, torch.Tensor] = {}
        self.sizes: dict[int, int] = {}  # bytes per row at each boundary, once seen
        self.recomputing: set[int] = set()
        self.stage_runs = np.zeros(stages.n_stages, dtype=int)  # rows each stage ran on

    def penultimate(self) -> dict[int, np.ndarray]:
        """Every row's penultimate features, by row, from one pass through every stage that
        also stores the boundaries (the first pass of a fit)."""
        features: dict[int, np.ndarray] = {}
        self._fill(0, self.stages.n_stages, self.order, features)
        return features

    def get(self, boundary: int, rows: np.ndarray) -> torch.Tensor:
        """The stored activations of ``rows`` at ``boundary`` (a fresh tensor)."""
        return self.stored[boundary][[self.slot[int(row)] for row in rows]].to(self.device)

    def prepare(self, boundary: int) -> bool:
        """Make ``boundary`` ready, freeing the stale ones above it; False when it cannot be
        stored and the caller must run the frozen layers itself."""
        for stale in [b for b in self.stored if b > boundary]:
            del self.stored[stale]
        if boundary in self.stored:
            return True
        if boundary in self.recomputing or not self._fits(boundary):
            return self._recompute(boundary)
        below = [b for b in self.stored if b < boundary]
        start = max(below) if below else 0
        if self.sizes:  # the first pass could not keep it beside the others
            logger.info("fine-tuning: the activations entering layer group %d did not fit "
                        "beside the others in the %.2f GB set aside; frozen layer groups "
                        "%d to %d run once more, from %s", boundary, self.budget / 1e9,
                        start, boundary - 1,
                        "the inputs" if start == 0 and 0 not in self.stored
                        else f"the stored activations entering group {start}")
        wanted = [b for b in self.order if start <= b <= boundary and b not in self.stored]
        return boundary in self._fill(start, boundary, wanted) or self._recompute(boundary)

    def _fits(self, boundary: int) -> bool:
        if boundary not in self.sizes:  # not seen yet: the pass decides
            return True
        used = sum(t.numel() * 4 for t in self.stored.values())
        return bool(used + self.sizes[boundary] * len(self.rows) <= self.budget)

    def _recompute(self, boundary: int) -> bool:
        if not self.recomputing:
            logger.info(
                "fine-tuning: the activations entering layer group %d of %d rows need "
                "%.2f GB, more than the %.2f GB set aside; from there down the frozen "
                "layers below the trainable ones run every epoch", boundary, len(self.rows),
                self.sizes[boundary] * len(self.rows) / 1e9, self.budget / 1e9)
        self.recomputing.add(boundary)
        return False

    def _fill(self, start: int, stop: int, wanted: list[int],
              features: dict[int, np.ndarray] | None = None) -> set[int]:
        """One pass through stages ``start`` to ``stop - 1`` over every row, storing the
        boundaries of ``wanted`` that fit the budget (in its order); returns them. With
        ``features`` (and ``stop`` the last stage), the penultimate features go there."""
        chosen: set[int] | None = None
        slices: dict[int, torch.Tensor] = {}
        with _evaluating(self.net), torch.no_grad():
            for first in range(0, len(self.rows), self.batch_size):
                rows = self.rows[first:first + self.batch_size]
                for positions, x in self._inputs(start, rows):
                    slots = [self.slot[int(p)] for p in positions]
                    activations = {start: x}
                    for stage in range(start, stop):
                        x = self.stages.run_stages(x, stage, stage + 1)
                        activations[stage + 1] = x
                    self.stage_runs[start:stop] += len(slots)
                    if chosen is None:
                        chosen = self._choose(activations, wanted)
                        slices = {b: torch.empty((len(self.rows), *activations[b].shape[1:]),
                                                 dtype=torch.float32) for b in chosen}
                    for b in chosen:
                        slices[b][slots] = activations[b].float().cpu()
                    if features is not None:
                        vectors = self.stages.embed_from(x, stop).float().cpu().numpy()
                        features.update(zip((int(p) for p in positions), vectors,
                                            strict=True))
        self.stored.update(slices)
        return chosen or set()

    def _choose(self, activations: dict[int, torch.Tensor], wanted: list[int]) -> set[int]:
        for b, x in activations.items():
            self.sizes[b] = int(np.prod(x.shape[1:])) * 4
        used = sum(t.numel() * 4 for t in self.stored.values())
        chosen = set()
        for b in wanted:
            need = self.sizes[b] * len(self.rows)
            if used + need <= self.budget:
                chosen.add(b)
                used += need
        return chosen

    def _inputs(self, start: int, rows: np.ndarray) -> Iterator[tuple[list[int], Any]]:
        if start == 0 and 0 not in self.stored:
            yield from self.batches(self.items, rows, rng=None, device=self.device)
        else:
            yield [int(row) for row in rows], self.get(start, rows)


def frozen_is_deterministic(stages: Stages, below: int, batchnorm: str) -> bool:
    """Whether stages ``0..below-1`` give the same output every epoch while frozen: batch
    norm frozen (or absent), no active dropout or stochastic depth."""
    for index in range(below):
        for owner in stages.stage_modules(index):
            for module in owner.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and \
                        batchnorm != "frozen":
                    return False
                rate = getattr(module, "p", None) if isinstance(module, torch.nn.Dropout) \
                    else getattr(module, "drop_prob", None)
                if rate:
                    return False
    return True


class _evaluating:
    """Eval mode inside the block, the module's own mode restored after it."""

    def __init__(self, net: Any):
        self.net = net

    def __enter__(self) -> None:
        self.training = self.net.training
        self.net.eval()

    def __exit__(self, *exc: object) -> None:
        self.net.train(self.training)
