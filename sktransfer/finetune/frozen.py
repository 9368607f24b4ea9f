"""What the frozen layers compute, computed once per fit.

Fine-tuning unfreezes layer groups from the top, so at any epoch the groups below the lowest
trainable one are frozen: their output for a row does not change until that group unfreezes.

- :class:`FeatureStore` keeps the penultimate features, for the probe and head-only epochs.
- :class:`ActivationStore` keeps the activations entering each trainable depth's lowest
  group (a *boundary*; not the inputs, which the modality keeps decoded once per fit in
  its ``decoded_store``), for networks that split at their group boundaries
  (:class:`~sktransfer.backbones._contract.Stages`). Every boundary the recipe will reach is
  computed in one pass through the frozen stages and stored (in the dtype computed, so
  training on it is exactly training on the recomputed activations) as far as
  :data:`ACTIVATION_BUDGET` allows, the boundaries used first taking precedence; a stale one
  (its stages since trained) is freed. A boundary that does not fit is computed when its
  epoch comes, from the nearest stored boundary below it, or, if even it alone does not
  fit, the frozen layers run every epoch (one log line says so).

Both compute in eval mode and at the run's precision, as frozen layers run while training:
a frozen layer group is used as at inference (dropout and stochastic depth off, batch norm
frozen), so its output for a row is the same every epoch. With ``batchnorm="train"`` the
frozen layers' batch norm follows each batch, and they are recomputed instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from sktransfer.backbones._contract import Stages
from sktransfer.backbones._runtime import autocasting, evaluating, inference

logger = logging.getLogger("sktransfer")

# bytes of stored boundary activations per fit. ELPV's 500 photos through EfficientNet-Lite0
# in bfloat16: the top five boundaries take 153 MB and are stored in the first pass; the
# next, 200 MB, is computed when its epoch comes, from the inputs (the stem and the first
# block run once more); the stem's output, 401 MB, is not stored, and the stem runs in the
# one epoch that trains the group above it
ACTIVATION_BUDGET = 1 << 28


class FeatureStore:
    """The penultimate features (``module.embed``) of the frozen network, computed once per
    row on first use, from un-augmented inputs. Valid while no backbone parameter has
    changed: the caller stops using it once one has. With ``activations``, the first use
    computes every row's features in the pass that stores the boundaries, so that no frozen
    layer runs twice for a row."""

    def __init__(self, net: Any, batches: Callable[..., Any], items: Sequence[Any],
                 device: str, activations: ActivationStore | None = None, *,
                 precision: str = "float32"):
        self.net, self.batches, self.items, self.device = net, batches, items, device
        self.precision = precision
        self.activations = activations
        self._rows: dict[int, np.ndarray] = {}

    def features(self, rows: np.ndarray) -> np.ndarray:
        missing = np.asarray([row for row in rows if int(row) not in self._rows], dtype=int)
        if len(missing) and self.activations is not None:
            self._rows.update(self.activations.penultimate())
            missing = np.asarray([row for row in rows if int(row) not in self._rows],
                                 dtype=int)
        if len(missing):
            with evaluating(self.net), inference(self.device, self.precision):
                for positions, inputs in self.batches(self.items, missing, rng=None,
                                                      device=self.device):
                    vectors = self.net.embed(inputs).float().cpu().numpy()
                    self._rows.update(zip((int(p) for p in positions), vectors, strict=True))
        return np.stack([self._rows[int(row)] for row in rows])


class ActivationStore:
    """The activations at the boundaries ``boundaries`` (in the order training reaches
    them: from the top down) of ``rows`` (training and validation), see the module
    docstring, kept row by row (a text's hidden states are as long as the text).
    ``get`` answers for a boundary that ``prepare`` made ready."""

    def __init__(self, net: Any, stages: Stages, batches: Callable[..., Any],
                 items: Sequence[Any], rows: np.ndarray, boundaries: Sequence[int], *,
                 device: str, batch_size: int, budget: int | None = None,
                 precision: str = "float32"):
        self.net, self.stages, self.batches, self.items = net, stages, batches, items
        self.device, self.batch_size, self.precision = device, batch_size, precision
        self.budget = ACTIVATION_BUDGET if budget is None else budget
        self.rows = np.sort(np.asarray(rows, dtype=int))
        self.order = [b for b in boundaries if stages.storable(b)]
        self.stored: dict[int, dict[int, Any]] = {}  # boundary -> row -> activation
        self.sizes: dict[int, float] = {}  # mean bytes per row at each boundary, once seen
        self.recomputing: set[int] = set()

    def penultimate(self) -> dict[int, np.ndarray]:
        """Every row's penultimate features, by row, from one pass through every stage that
        also stores the boundaries (the first pass of a fit)."""
        features: dict[int, np.ndarray] = {}
        self._fill(0, self.stages.n_stages, self.order, features)
        return features

    def get(self, boundary: int, rows: np.ndarray) -> Any:
        """The stored activations of ``rows`` at ``boundary``, as one batch."""
        stored = self.stored[boundary]
        return self.stages.collate([stored[int(row)] for row in rows], self.device)

    def prepare(self, boundary: int) -> bool:
        """Make ``boundary`` ready, freeing the stale ones above it; False when it cannot be
        stored and the caller must run the frozen layers itself."""
        self.release(boundary)
        if boundary in self.stored:
            return True
        if (boundary in self.recomputing or not self.stages.storable(boundary)
                or not self._fits(boundary)):
            return self._recompute(boundary)
        below = [b for b in self.stored if b < boundary]
        start = max(below) if below else 0
        if self.sizes:  # the first pass could not keep it beside the others
            logger.info("fine-tuning: the activations entering layer group %d did not fit "
                        "beside the others in the %.2f GB set aside; frozen layer groups "
                        "%d to %d run once more, from %s", boundary, self.budget / 1e9,
                        start, boundary - 1, "the inputs" if start not in self.stored
                        else f"the stored activations entering group {start}")
        wanted = [b for b in self.order if start <= b <= boundary and b not in self.stored]
        return boundary in self._fill(start, boundary, wanted) or self._recompute(boundary)

    def release(self, boundary: int) -> None:
        """Free the boundaries above ``boundary`` (stale once its group trains)."""
        for stale in [b for b in self.stored if b > boundary]:
            del self.stored[stale]

    def _used(self) -> float:
        return sum(self.sizes[b] * len(self.rows) for b in self.stored)

    def _fits(self, boundary: int) -> bool:
        if boundary not in self.sizes:  # not seen yet: the pass decides
            return True
        return bool(self._used() + self.sizes[boundary] * len(self.rows) <= self.budget)

    def _recompute(self, boundary: int) -> bool:
        if not self.recomputing:
            need = self.sizes.get(boundary)
            logger.info(
                "fine-tuning: the activations entering layer group %d of %d rows %s; from "
                "there down the frozen layers below the trainable ones run every epoch",
                boundary, len(self.rows),
                "cannot be stored" if need is None else
                f"need {need * len(self.rows) / 1e9:.2f} GB, more than the "
                f"{self.budget / 1e9:.2f} GB set aside")
        self.recomputing.add(boundary)
        return False

    def _fill(self, start: int, stop: int, wanted: list[int],
              features: dict[int, np.ndarray] | None = None) -> set[int]:
        """One pass through stages ``start`` to ``stop - 1`` over every row, storing the
        boundaries of ``wanted`` that fit the budget (in its order, judged on the first
        batch); returns them. With ``features`` (and ``stop`` the last stage), the
        penultimate features go there."""
        chosen: set[int] | None = None
        kept: dict[int, dict[int, Any]] = {}
        with evaluating(self.net), torch.no_grad(), autocasting(self.device, self.precision):
            for first in range(0, len(self.rows), self.batch_size):
                for positions, x in self._inputs(start, self.rows[first:first + self.batch_size]):
                    activations = {start: x}
                    for stage in range(start, stop):
                        x = self.stages.run_stages(x, stage, stage + 1)
                        activations[stage + 1] = x
                    if chosen is None:
                        chosen = self._choose(activations, wanted)
                        kept = {b: {} for b in chosen}
                    for b in chosen:
                        kept[b].update(zip(positions, self.stages.rows(activations[b]),
                                           strict=True))
                    if features is not None:
                        vectors = self.stages.embed_from(x, stop).float().cpu().numpy()
                        features.update(zip(positions, vectors, strict=True))
        self.stored.update(kept)
        return chosen or set()

    def _choose(self, activations: dict[int, Any], wanted: list[int]) -> set[int]:
        for b, x in activations.items():
            if self.stages.storable(b):
                rows = self.stages.rows(x)
                self.sizes[b] = sum(r.numel() * r.element_size() for r in rows) / len(rows)
        used = self._used()
        chosen = set()
        for b in wanted:
            need = self.sizes[b] * len(self.rows)
            if used + need <= self.budget:
                chosen.add(b)
                used += need
        return chosen

    def _inputs(self, start: int, rows: np.ndarray) -> Iterator[tuple[list[int], Any]]:
        if start in self.stored:
            yield [int(row) for row in rows], self.get(start, rows)
        else:  # start is 0: the inputs
            for positions, inputs in self.batches(self.items, rows, rng=None,
                                                  device=self.device):
                yield [int(p) for p in positions], inputs


def frozen_is_stable(stages: Stages, below: int, batchnorm: str) -> bool:
    """Whether stages ``0..below-1`` give the same output every epoch while frozen: they run
    as at inference (dropout off, see ``TrainingRun``), so only batch norm in training mode
    (``batchnorm="train"``) moves them."""
    if batchnorm == "frozen":
        return True
    return not any(isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
                   for index in range(below) for owner in stages.stage_modules(index)
                   for module in owner.modules())
