"""One fine-tuning run: it owns its state, takes what it needs as arguments and returns a
:class:`TrainingResult` from which the estimator sets its fitted attributes.

The recipe (LP-FT: Kumar et al., 2022; gradual unfreezing: Howard and Ruder, 2018), for every
kind of target (:mod:`sktransfer.finetune.targets` owns what differs between them):

0. **Start where frozen ends.** The new head is the probe fitted exactly on the frozen
   features of the training split: for classes a logistic regression (standardised or not and
   its ``C`` chosen by cross-validated log-loss, class-weighted as ``class_weight`` says),
   for real values a ridge regression. That model is epoch 0, the first candidate.
1. ``head_epochs`` epochs train only the head, then one more layer group is unfrozen from the
   top every ``unfreeze_every`` epochs, up to ``unfreeze_depth`` groups.
2. Backbone groups learn at ``lr * backbone_lr_ratio``, each group below at ``layer_decay``
   times the rate of the group above; every rate warms up linearly over ``warmup_epochs`` and
   then decays along a cosine to zero at ``max_epochs``.
3. The loss is the target's: class-weighted cross-entropy, per-label log-loss, the mean
   squared error of standardised values, or the balanced sum of several tasks' losses.
4. Every epoch is scored on a validation split with ``scoring`` (default: the target's own
   validation loss, for classes the class-weighted log-loss after temperature scaling, a
   proper score that separates epochs a small split's accuracy ties), ties broken by that
   loss; with the default score an epoch replaces the kept one only when it is better by
   more than one standard error of the paired per-sample differences. With
   ``early_stopping``, training stops after ``patience`` epochs without improvement and the
   best epoch is restored; without it (the default), the last epoch is kept. The kept epoch's
   calibration (a temperature) is the result's.
5. **The guard against negative transfer** (``guard``, with the probe as epoch 0). ``"probe"``
   scores the kept epoch against the probe (epoch 0: the pretrained backbone and the probe)
   on the validation split; ``"wise"`` (the default; WiSE-FT: Wortsman et al., 2022) also
   networks whose weights are mixed between them, ``(1 - m) * probe + m * kept`` for every
   ``m`` in ``MIXES``. The best is kept only when it beats the probe by more than one
   standard error of the paired per-sample differences; otherwise the probe is, refitted on
   every row: the frozen-feature model the user would have had.

Without augmentation, the frozen layers run once per row and fit, not once per epoch
(:mod:`sktransfer.finetune.frozen`): head-only epochs train on the stored penultimate
features, and later epochs, where the network splits at its layer groups, on the stored
activations entering the lowest trainable group.

Every forward pass runs at the recipe's ``precision`` (autocast; the backward follows its
dtypes; float16 scales the loss). A batch's forward and backward run in micro-batches whose
activations kept for the backward take about ``TRAINING_BYTES``, measured on one row at each
new depth: the gradients add up to the batch's (each part's loss is its share of the batch
mean), and memory stays bounded whatever the network and input size. On the CPU they are
also faster: an EfficientNet-Lite0 step of 32 images at every depth took 1.0 s in parts of 8
against 1.35 s whole (docs/performance.md). With ``batchnorm="train"`` a batch is never
split, since batch statistics would change. This module imports torch.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from sktransfer.backbones._contract import Trainable
from sktransfer.backbones._runtime import autocasting, inference
from sktransfer.exceptions import TrainingDivergedError
from sktransfer.finetune.frozen import ActivationStore, FeatureStore, frozen_is_stable
from sktransfer.finetune.probe import linear_head
from sktransfer.finetune.targets import Targets, Validation
from sktransfer.modality import Rows

logger = logging.getLogger("sktransfer")

MAX_GRAD_NORM = 1.0  # gradients are clipped to this norm, as transformers' Trainer does
MIXES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the fine-tuned network's weight, for guard="wise"
GUARD_MIXES = {"wise": MIXES, "probe": (0.0, 1.0)}  # what each guard chooses among
# bytes of activations a micro-batch keeps for its backward (module docstring): 8 rows of
# EfficientNet-Lite0 at 224 px at every depth in bfloat16 (32 at the top two groups), 32 of
# MiniLM
TRAINING_BYTES = 1 << 29


class Batches(Protocol):
    """``(positions, inputs)`` per batch of ``items`` in ``order``, on ``device``;
    augmented when ``rng`` is given (a modality's ``training_batches``)."""

    def __call__(self, items: Sequence[Any], order: Rows, *,
                 rng: np.random.Generator | None, device: str
                 ) -> Iterator[tuple[list[int], Any]]: ...


@dataclass(frozen=True)
class Recipe:
    """How to train: the estimator's parameters that the run reads (see the module
    docstring), plus ``name`` (the estimator's class, for messages), ``augment`` (whether
    training batches are augmented), ``reuse_frozen`` (False recomputes the frozen layers
    every epoch, to measure what reusing them saves) and ``keep_endpoints`` (the result keeps
    both ends of the guard's mix and their validations, to measure every guard from one
    fit)."""

    name: str
    max_epochs: int
    head_init: str
    head_epochs: int
    unfreeze_every: int
    unfreeze_depth: int | None
    lr: float
    backbone_lr_ratio: float
    layer_decay: float
    weight_decay: float
    warmup_epochs: float
    batchnorm: str
    scoring: Any
    early_stopping: bool
    patience: int
    batch_size: int
    progress: bool
    guard: str | None = "wise"
    augment: bool = False
    reuse_frozen: bool = True
    keep_endpoints: bool = False
    precision: str = "float32"

    def n_unfrozen(self, step: int, n_groups: int) -> int:
        """Backbone groups trainable in training epoch ``step`` (0-based), from the top."""
        if step < self.head_epochs:
            return 0
        depth = n_groups if self.unfreeze_depth is None else min(self.unfreeze_depth, n_groups)
        return min(depth, 1 + (step - self.head_epochs) // self.unfreeze_every)

    def schedule(self, progress: float, start: float = 0.0) -> float:
        """The learning-rate factor after ``progress`` training epochs (fractional) of a
        parameter group that began training at epoch ``start``: a linear warm-up over
        ``warmup_epochs`` from its start, times a cosine over the whole run."""
        since = progress - start
        warm = min(1.0, (since + 1e-3) / self.warmup_epochs) if self.warmup_epochs > 0 else 1.0
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(progress / self.max_epochs, 1.0)))


@dataclass
class TrainingResult:
    """What a run leaves: the network at the kept epoch, in eval mode, its record, and what
    decoding needs from that epoch (``calibration``: a temperature for classes)."""

    net: Any
    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    calibration: dict[str, Any]
    n_layer_groups: int
    mixing: float = 1.0
    guard: list[dict[str, Any]] = field(default_factory=list)
    endpoints: Endpoints | None = None


@dataclass
class Endpoints:
    """Both ends of the guard's mix (state dicts: the probe's, epoch 0, and the kept
    epoch's) and each mix's validation, kept only when measuring (``keep_endpoints``)."""

    probe: dict[str, Any]
    tuned: dict[str, Any]
    validations: dict[float, Validation]


@dataclass
class _Kept:
    epoch: int = 0
    score: float = -math.inf
    calibration: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    validation: Validation | None = None


def mixed(probe: dict[str, Any], tuned: dict[str, Any], mix: float) -> dict[str, Any]:
    """The state dict ``(1 - mix) * probe + mix * tuned`` (floating-point entries; counters
    come from ``tuned``)."""
    return {name: torch.lerp(probe[name], value, mix) if value.is_floating_point() else value
            for name, value in tuned.items()}


def beats(candidate: Validation, best: Validation, scoring: Any) -> bool:
    """Whether ``candidate`` beats ``best`` on the validation split. With the default score
    (``scoring=None``), the mean per-sample loss must improve by more than one standard
    error of the paired differences: a small validation split's noise does not move the
    model."""
    if scoring is not None:
        return (candidate.score, -candidate.loss) > (best.score, -best.loss)
    gains = best.per_sample - candidate.per_sample
    noise = gains.std(ddof=1) / math.sqrt(len(gains)) if len(gains) > 1 else 0.0
    return float(gains.mean()) > noise


def best_mix(validations: dict[float, Validation]) -> float:
    """The mix with the best validation score (ties: the lower loss, then the lower mix)."""
    return max(sorted(validations),
               key=lambda mix: (validations[mix].score, -validations[mix].loss))


def choose_mix(validations: dict[float, Validation], scoring: Any) -> float:
    """The :func:`best_mix`, if it ``beats`` the probe (mix 0); else 0."""
    best = best_mix(validations)
    return best if best != 0.0 and beats(validations[best], validations[0.0], scoring) else 0.0


@contextlib.contextmanager
def saved_for_backward() -> Iterator[list[int]]:
    """Inside the block, ``[bytes]`` counts what forward passes keep for their backward."""
    kept = [0]

    def pack(tensor: Any) -> Any:
        kept[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield kept


def rows_per_part(bytes_per_row: int, batch_size: int) -> int:
    """Rows per micro-batch when one row keeps ``bytes_per_row`` for its backward."""
    return max(1, min(batch_size, TRAINING_BYTES // max(bytes_per_row, 1)))


class TrainingRun:
    """One fit's training: data, splits, the frozen-feature store, the kept epoch."""

    def __init__(self, recipe: Recipe, trainable: Trainable, batches: Batches,
                 items: Sequence[Any], targets: Targets, train_rows: np.ndarray,
                 val_rows: np.ndarray, device: str):
        self.recipe, self.items, self.targets = recipe, items, targets
        self.net, self.groups, self.head = (trainable.module.to(device), trainable.groups,
                                            trainable.head)
        self.batches = batches
        self.train_rows, self.val_rows, self.device = train_rows, val_rows, device
        self.steps_per_epoch = math.ceil(len(train_rows) / recipe.batch_size)
        self.stages = trainable.stages
        self.precision = recipe.precision
        self.scaler = torch.amp.GradScaler(torch.device(device).type,
                                           enabled=recipe.precision == "float16")
        self.micro: int | None = None  # rows per micro-batch at this depth, once measured
        self.activations = self._activation_store()
        self.store = FeatureStore(self.net, batches, items, device, self.activations,
                                  precision=recipe.precision)
        self.boundary: int | None = None  # where training starts from stored activations
        self.touched = False  # whether a backbone parameter has been trained yet
        self.started: dict[str, float] = {}  # parameter group -> epoch it began training
        self.history: list[dict[str, Any]] = []
        self.kept = self.probe = _Kept()

    def fit(self, rng: np.random.Generator) -> TrainingResult:
        """Epoch 0, then the training epochs; the kept epoch's weights are restored."""
        recipe = self.recipe
        best = self.start()
        waited, optimizer, unfrozen_before = 0, None, None
        for epoch in range(1, recipe.max_epochs + 1):
            n_unfrozen = recipe.n_unfrozen(epoch - 1, len(self.groups))
            if n_unfrozen != unfrozen_before:  # a new phase: new parameter groups
                optimizer = self.optimizer(n_unfrozen)
                unfrozen_before = n_unfrozen
                # measured again at this depth; batch statistics forbid splitting a batch
                self.micro = recipe.batch_size if recipe.batchnorm == "train" else None
                self.boundary = self._boundary(n_unfrozen)
            started = time.perf_counter()
            loss = self.train_epoch(optimizer, rng, epoch, n_unfrozen)
            candidate = self.evaluate(epoch, n_unfrozen, loss, optimizer,
                                      seconds=time.perf_counter() - started)
            better = beats(candidate, best, recipe.scoring)
            if better or not recipe.early_stopping:
                waited = 0 if better else waited + 1
                best = candidate
                self.keep(epoch, candidate)
            else:
                waited += 1
                if waited >= recipe.patience:
                    break
        self.net.load_state_dict(self.kept.state)
        mixing, guarded, endpoints = self.guard()
        if self.kept.epoch == 0 and recipe.head_init == "probe":
            self.refit_probe()
        self.net.eval()
        return TrainingResult(self.net, self.history, self.kept.epoch, self.kept.score,
                              self.kept.calibration, len(self.groups), mixing, guarded,
                              endpoints)

    def guard(self) -> tuple[float, list[dict[str, Any]], Endpoints | None]:
        """The guard against negative transfer (module docstring, step 5): score the mixes
        of the probe and the kept epoch on the validation split, keep the chosen one. Returns
        the fine-tuned network's weight in the kept one, a record per mix scored, and (when
        measuring) both ends."""
        recipe, probe, tuned = self.recipe, self.probe, self.kept
        if (recipe.guard is None or recipe.head_init != "probe" or tuned.epoch == 0
                or probe.validation is None or tuned.validation is None):
            return (0.0 if tuned.epoch == 0 else 1.0), [], None
        allowed = GUARD_MIXES[recipe.guard]
        validations = {0.0: probe.validation, 1.0: tuned.validation}
        for mix in MIXES if recipe.keep_endpoints else allowed:
            if mix not in validations:
                self.net.load_state_dict(mixed(probe.state, tuned.state, mix))
                validations[mix] = self.targets.validate(
                    self._val_logits(tuned.epoch), self.val_rows, recipe.scoring)
        chosen = choose_mix({mix: validations[mix] for mix in allowed}, recipe.scoring)
        records = [{"mixing": mix, "val_score": validations[mix].score,
                    "val_loss": validations[mix].loss, "kept": mix == chosen}
                   for mix in sorted(validations)]
        logger.info("guard %r: the fine-tuned network's weight in the kept one is %g "
                    "(validation loss %.4f; the probe's %.4f)", recipe.guard, chosen,
                    validations[chosen].loss, validations[0.0].loss)
        endpoints = (Endpoints(probe.state, tuned.state, validations)
                     if recipe.keep_endpoints else None)
        if chosen == 0.0:
            self.kept = probe
        elif chosen != 1.0:
            self.kept = _Kept(tuned.epoch, validations[chosen].score,
                              validations[chosen].calibration,
                              mixed(probe.state, tuned.state, chosen), validations[chosen])
        self.net.load_state_dict(self.kept.state)
        return chosen, records, endpoints

    def _boundaries(self) -> list[int]:
        """The boundary (index of the lowest trainable group) of every phase with a
        trainable group, in the order training reaches them; not the inputs (boundary 0),
        which the modality keeps decoded (``decoded_store``)."""
        n_groups, found = len(self.groups), []
        for step in range(self.recipe.max_epochs):
            n_unfrozen = self.recipe.n_unfrozen(step, n_groups)
            if 0 < n_unfrozen < n_groups and n_groups - n_unfrozen not in found:
                found.append(n_groups - n_unfrozen)
        return found

    def _activation_store(self) -> ActivationStore | None:
        recipe, stages = self.recipe, self.stages
        boundaries = self._boundaries()
        if (stages is None or recipe.augment or not recipe.reuse_frozen or not boundaries
                or not frozen_is_stable(stages, max(boundaries), recipe.batchnorm)):
            return None
        rows = np.concatenate([self.train_rows, self.val_rows])
        return ActivationStore(self.net, stages, self.batches, self.items, rows, boundaries,
                               device=self.device, batch_size=recipe.batch_size,
                               precision=recipe.precision)

    def _boundary(self, n_unfrozen: int) -> int | None:
        """Where this depth's training starts from stored activations; None from the
        inputs (which the modality keeps decoded)."""
        if self.activations is None or n_unfrozen == 0:
            return None
        boundary = len(self.groups) - n_unfrozen
        if boundary == 0:  # every group trains: every stored boundary is stale
            self.activations.release(0)
            return None
        return boundary if self.activations.prepare(boundary) else None

    def start(self) -> Validation:
        """Epoch 0: the head from a linear probe on frozen features (or as initialised)."""
        started = time.perf_counter()
        if self.recipe.head_init == "probe":
            fitted = self._fit_probe(self.train_rows)
            logger.info("head initialised by a probe on frozen features: %s", fitted)
        return self.evaluate(0, 0, float("nan"), None, keep=True,
                             seconds=time.perf_counter() - started)

    def refit_probe(self) -> None:
        """The probe was kept: refit it on every row, as the frozen baseline is fitted (the
        validation split has done its work of choosing it)."""
        self._fit_probe(np.sort(np.concatenate([self.train_rows, self.val_rows])))

    def _fit_probe(self, rows: np.ndarray) -> str:
        from threadpoolctl import threadpool_limits

        features = self.store.features
        width = features(rows[:1]).shape[1]
        weight, bias = linear_head(self.head, self.targets.n_outputs, width)
        # One BLAS thread: beside torch's OpenMP threads, still spinning after a forward
        # pass, OpenBLAS's own threads fought them for the cores once the matrices passed
        # its threading threshold. MiniLM's 2,000 review features took 17 s to probe with
        # two BLAS threads and 0.85 s with one (1,700 rows: 1.0 s either way).
        with threadpool_limits(1, user_api="blas"):
            return self.targets.fit_probe(weight, bias, features, rows, self.val_rows)

    def optimizer(self, n_unfrozen: int) -> torch.optim.Optimizer:
        """AdamW over the head and the top ``n_unfrozen`` groups, at their layer-decayed
        peak rates; every other backbone parameter is frozen."""
        recipe, groups = self.recipe, self.groups
        param_groups: list[dict[str, Any]] = [
            {"params": self.head, "lr": recipe.lr, "base_lr": recipe.lr, "name": "head"}]
        for depth in range(n_unfrozen):  # depth 0 = the group just below the head
            index = len(groups) - 1 - depth
            rate = recipe.lr * recipe.backbone_lr_ratio * recipe.layer_decay ** depth
            param_groups.append({"params": groups[index], "lr": rate, "base_lr": rate,
                                 "name": f"group{index}"})
        trainable = {id(p) for group in param_groups for p in group["params"]}
        for group in groups:
            for parameter in group:
                parameter.requires_grad_(id(parameter) in trainable)
        return torch.optim.AdamW(param_groups, weight_decay=recipe.weight_decay)

    def _train_mode(self, n_unfrozen: int) -> None:
        """Training mode, but for frozen layer groups (where the network splits at them),
        which run as at inference (no dropout), and batch norm as ``batchnorm`` says."""
        self.net.train()
        if self.stages is not None:
            for index in range(len(self.groups) - n_unfrozen):
                for owner in self.stages.stage_modules(index):
                    if isinstance(owner, torch.nn.Module):
                        owner.eval()
        for module in self.net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                # frozen: pretrained statistics, which small target sets estimate badly
                module.train(self.recipe.batchnorm == "train")

    def train_epoch(self, optimizer: Any, rng: np.random.Generator, epoch: int,
                    n_unfrozen: int) -> float:
        recipe = self.recipe
        self._train_mode(n_unfrozen)
        self.touched = self.touched or n_unfrozen > 0
        order = rng.permutation(self.train_rows)
        total, count = 0.0, 0
        for step, (batch, take, forward) in enumerate(self._inputs(order, rng)):
            progress = epoch - 1 + step / self.steps_per_epoch
            for group in optimizer.param_groups:  # each group warms up from its unfreezing
                start = self.started.setdefault(group["name"], progress)
                group["lr"] = group["base_lr"] * recipe.schedule(progress, start)
            optimizer.zero_grad(set_to_none=True)
            loss = 0.0
            for part in self._parts(len(batch)):
                with self._measuring(), autocasting(self.device, self.precision):
                    logits = forward(take(part))
                part_loss = self.targets.loss(logits.float(), batch[part], batch)
                if not torch.isfinite(part_loss):
                    self._diverged(epoch, f"the training loss became {float(part_loss)}")
                self.scaler.scale(part_loss).backward()
                loss += float(part_loss.detach())
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            self.scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
            if not torch.isfinite(norm) and not self.scaler.is_enabled():
                # clipping would scale every gradient to 0 or NaN (a float16 scaler skips
                # the step and lowers its scale instead)
                self._diverged(epoch, f"the gradient norm became {float(norm)}")
            self.scaler.step(optimizer)
            self.scaler.update()
            total += loss * len(batch)
            count += len(batch)
        return total / max(count, 1)

    def _parts(self, n_rows: int) -> Iterator[slice]:
        """The micro-batches of a batch of ``n_rows`` (module docstring); the first batch at
        a new depth starts with one row, on which ``_measuring`` sets their size."""
        start = 0
        while start < n_rows:
            size = 1 if self.micro is None else self.micro
            yield slice(start, start + size)
            start += size

    @contextlib.contextmanager
    def _measuring(self) -> Iterator[None]:
        """Inside the first micro-batch at a depth (one row), count the bytes the forward
        keeps for the backward, and size the micro-batches from them."""
        if self.micro is not None:
            yield
            return
        with saved_for_backward() as kept:
            yield
        self.micro = rows_per_part(kept[0], self.recipe.batch_size)
        logger.debug("fine-tuning: %.1f MB kept for the backward per row; micro-batches of "
                     "%d rows", kept[0] / 1e6, self.micro)

    def _frozen(self) -> bool:
        """Whether the stored frozen features are still the network's penultimate ones."""
        return not self.touched and self.recipe.reuse_frozen

    def _inputs(self, rows: np.ndarray, rng: np.random.Generator | None
                ) -> Iterator[tuple[np.ndarray, Callable[[slice], Any], Callable[[Any], Any]]]:
        """``(rows, take, forward)`` per batch of ``rows``: ``take(part)`` is the input of
        the rows ``part`` of the batch (collated for those rows alone, as a batch of them
        would be) and ``forward`` gives their logits. Inputs are the stored frozen features
        while the backbone is untouched and inputs are not augmented, the stored
        activations at the lowest trainable group's boundary once it is touched (the frozen
        layers are not run again), the network's inputs otherwise."""
        augment = rng is not None and self.recipe.augment
        if not augment and (self._frozen() or self.boundary is not None):
            for start in range(0, len(rows), self.recipe.batch_size):
                chunk = rows[start:start + self.recipe.batch_size]
                boundary = self.boundary
                if self._frozen() or boundary is None:
                    yield chunk, functools.partial(self._features, chunk), self.net.classify
                else:
                    yield (chunk, functools.partial(self._stored, boundary, chunk),
                           functools.partial(self._from_boundary, boundary))
            return
        for positions, inputs in self.batches(self.items, rows,
                                              rng=rng if augment else None,
                                              device=self.device):
            yield np.asarray(positions), inputs.__getitem__, self.net

    def _features(self, chunk: np.ndarray, part: slice) -> Any:
        return torch.as_tensor(self.store.features(chunk[part]), device=self.device)

    def _stored(self, boundary: int, chunk: np.ndarray, part: slice) -> Any:
        assert self.activations is not None
        return self.activations.get(boundary, chunk[part])

    def _from_boundary(self, boundary: int, x: Any) -> Any:
        assert self.stages is not None
        return self.net.classify(self.stages.embed_from(x, boundary))

    def evaluate(self, epoch: int, n_unfrozen: int, loss: float, optimizer: Any, *,
                 seconds: float, keep: bool = False) -> Validation:
        """Score this epoch on the validation split (see ``better``) and record it."""
        validation = self.targets.validate(self._val_logits(epoch), self.val_rows,
                                           self.recipe.scoring)
        record = {"epoch": epoch, "unfrozen_groups": n_unfrozen, "train_loss": loss,
                  "val_score": validation.score, "val_loss": validation.loss,
                  **validation.record, "seconds": seconds,
                  "lrs": [] if optimizer is None else  # peak rates, before the schedule
                  [group["base_lr"] for group in optimizer.param_groups]}
        self.history.append(record)
        self._report(record)
        if keep:
            self.keep(epoch, validation)
        return validation

    def keep(self, epoch: int, validation: Validation) -> None:
        """Keep the network as it is now, as the epoch just evaluated."""
        self.kept = _Kept(epoch, validation.score, validation.calibration,
                          copy.deepcopy(self.net.state_dict()), validation)
        if epoch == 0:
            self.probe = self.kept

    def _val_logits(self, epoch: int) -> np.ndarray:
        self.net.eval()
        with inference(self.device, self.precision):
            logits = np.concatenate([forward(take(slice(None))).float().cpu().numpy()
                                     for _, take, forward in self._inputs(self.val_rows,
                                                                          None)])
        if not np.isfinite(logits).all():
            self._diverged(epoch, "the network's outputs on the validation split became NaN "
                           "or infinite")
        return logits

    def _report(self, record: dict[str, Any]) -> None:
        message = (f"epoch {record['epoch']}/{self.recipe.max_epochs}: "
                   f"{record['unfrozen_groups']} backbone groups unfrozen, train loss "
                   f"{record['train_loss']:.4f}, validation score {record['val_score']:.4f}, "
                   f"validation loss {record['val_loss']:.4f}")
        logger.info(message)
        if self.recipe.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"{self.recipe.name} {message}")

    def _diverged(self, epoch: int, what: str) -> None:
        """Training diverged: stop with an error naming the epoch and the rate, rather than
        keep an earlier epoch silently (a rate that explodes is a setting to change, not
        noise)."""
        raise TrainingDivergedError(
            f"{self.recipe.name}: fine-tuning diverged in epoch {epoch}: {what} "
            f"(lr={self.recipe.lr:g}); lower lr (the default is 1e-4)")
