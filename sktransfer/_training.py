"""One fine-tuning run's state and steps: the probe (epoch 0), training epochs (from the
stored frozen features while the backbone is untouched and inputs are not augmented),
validation scoring with temperature scaling, and the rule that keeps an epoch.

Used by :class:`sktransfer._finetune.FineTuning`; this module imports torch.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import balanced_accuracy_score, get_scorer

from sktransfer._probe import FeatureStore, calibrate, fit_probe
from sktransfer.exceptions import TrainingDivergedError

logger = logging.getLogger("sktransfer")

MAX_GRAD_NORM = 1.0  # gradients are clipped to this norm, as transformers' Trainer does


class Run:
    """One fit's training state: data, splits, the frozen-feature store and the kept model."""

    def __init__(self, owner: Any, net: Any, items: list[Any], encoded: np.ndarray,
                 train_rows: np.ndarray, val_rows: np.ndarray, weights: np.ndarray | None,
                 device: str):
        self.owner, self.net, self.items, self.encoded = owner, net, items, encoded
        self.train_rows, self.val_rows, self.device = train_rows, val_rows, device
        self.weights = None if weights is None else torch.as_tensor(weights, device=device)
        self.class_weights = weights
        self.kept: dict[str, Any] = {}
        self.steps_per_epoch = math.ceil(len(train_rows) / owner.batch_size)
        self.store = FeatureStore(net, owner._batches, items, device)
        self.touched = False  # whether a backbone parameter has been trained yet
        self.started: dict[str, float] = {}  # parameter group -> epoch it began training

    def start(self, head: list[Any]) -> tuple[float, float, np.ndarray]:
        """Epoch 0: the head from a linear probe on frozen features (or as initialised)."""
        owner, started = self.owner, time.perf_counter()
        if owner.head_init == "probe":
            C = fit_probe(head, self.store.features(self.train_rows),
                          self.encoded[self.train_rows], self.store.features(self.val_rows),
                          self.encoded[self.val_rows], self.class_weights)
            logger.info("head initialised by a linear probe on frozen features (C=%g)", C)
        return self.evaluate(0, 0, float("nan"), None, keep=True,
                             seconds=time.perf_counter() - started)

    def refit_probe(self, head: list[Any]) -> None:
        """The probe was kept: refit it on every row, as the frozen baseline is fitted (the
        validation split has done its work of choosing it)."""
        rows = np.sort(np.concatenate([self.train_rows, self.val_rows]))
        fit_probe(head, self.store.features(rows), self.encoded[rows],
                  self.store.features(self.val_rows), self.encoded[self.val_rows],
                  self.class_weights)

    def better(self, candidate: Any, best: Any) -> bool:
        """Whether ``candidate`` beats the kept epoch. With the default score, the mean
        per-sample log-loss must improve by more than one standard error of the paired
        differences: a small validation split's noise does not move the model."""
        if self.owner.scoring is not None:
            return candidate[:2] > best[:2]
        gains = best[2] - candidate[2]
        noise = gains.std(ddof=1) / math.sqrt(len(gains)) if len(gains) > 1 else 0.0
        return float(gains.mean()) > noise

    def train_epoch(self, optimizer: Any, rng: np.random.Generator, epoch: int,
                    n_unfrozen: int) -> float:
        owner, net = self.owner, self.net
        owner._train_mode(net)
        self.touched = self.touched or n_unfrozen > 0
        order = rng.permutation(self.train_rows)
        total, count = 0.0, 0
        for step, (positions, logits) in enumerate(self._logits(order, rng)):
            progress = epoch - 1 + step / self.steps_per_epoch
            for group in optimizer.param_groups:  # each group warms up from its unfreezing
                start = self.started.setdefault(group["name"], progress)
                group["lr"] = group["base_lr"] * owner._schedule(progress, start)
            batch = np.asarray(positions)
            targets = torch.as_tensor(self.encoded[batch], device=self.device)
            loss = torch.nn.functional.cross_entropy(logits, targets, weight=self.weights)
            if not torch.isfinite(loss):
                raise_diverged(owner, epoch, f"the training loss became {float(loss)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for group in optimizer.param_groups for p in group["params"]], MAX_GRAD_NORM)
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        return total / max(count, 1)

    def _frozen(self) -> bool:
        """Whether the stored frozen features are still the network's penultimate ones."""
        return not self.touched and self.owner._reuse_frozen

    def _logits(self, rows: np.ndarray, rng: np.random.Generator | None) -> Any:
        """``(positions, logits)`` per batch of ``rows``: from the stored frozen features
        while the backbone is untouched and inputs are not augmented (the frozen layers are
        not run again), through the whole network otherwise."""
        owner = self.owner
        augment = rng is not None and owner._augments
        if self._frozen() and not augment:
            for start in range(0, len(rows), owner.batch_size):
                positions = rows[start:start + owner.batch_size]
                features = torch.as_tensor(self.store.features(positions), device=self.device)
                yield positions, self.net.classify(features)
            return
        for positions, inputs in owner._batches(self.items, rows, rng if augment else None,
                                                self.device):
            yield positions, self.net(inputs)

    def evaluate(self, epoch: int, n_unfrozen: int, loss: float, optimizer: Any, *,
                 seconds: float, keep: bool = False) -> tuple[float, float, np.ndarray]:
        """Score this epoch on the validation split: ``(score, -log_loss, per-sample
        log-losses)`` (see ``better``)."""
        owner, y_val = self.owner, self.encoded[self.val_rows]
        weights = None if self.class_weights is None else self.class_weights[y_val]
        temperature, proba, loss_val = calibrate(self._val_logits(epoch), y_val, weights)
        per_sample = -np.log(np.clip(proba[np.arange(len(y_val)), y_val], 1e-15, 1.0))
        if weights is not None:
            per_sample = per_sample * weights * len(weights) / weights.sum()
        if owner.scoring is None:
            score = -loss_val
        else:
            score = float(get_scorer(owner.scoring)(
                _Fixed(owner.classes_, proba, self.val_rows), self.val_rows, owner.classes_[y_val]))
        record = {"epoch": epoch, "unfrozen_groups": n_unfrozen, "train_loss": loss,
                  "val_score": score, "val_log_loss": loss_val,
                  "val_balanced_accuracy": balanced_accuracy_score(y_val, proba.argmax(1)),
                  "val_predicted_classes": len(np.unique(proba.argmax(1))),
                  "temperature": temperature, "seconds": seconds,
                  "lrs": [] if optimizer is None else  # peak rates, before the schedule
                  [group["base_lr"] for group in optimizer.param_groups]}
        owner.history_.append(record)
        owner._report(record)
        self.temperature = temperature
        if keep:
            self.keep(epoch, score)
        return score, -loss_val, per_sample

    def keep(self, epoch: int, score: float) -> None:
        """Keep the network as it is now, as the epoch just evaluated."""
        self.kept = copy.deepcopy(self.net.state_dict())
        owner = self.owner
        owner.best_epoch_, owner.best_score_, owner.temperature_ = epoch, score, self.temperature

    def _val_logits(self, epoch: int) -> np.ndarray:
        self.net.eval()
        with torch.inference_mode():
            logits = np.concatenate([logits.float().cpu().numpy()
                                     for _, logits in self._logits(self.val_rows, None)])
        if not np.isfinite(logits).all():
            raise_diverged(self.owner, epoch, "the network's outputs on the validation split "
                           "became NaN or infinite")
        return logits


def raise_diverged(owner: Any, epoch: int, what: str) -> None:
    """Training diverged: stop with an error naming the epoch and the rate, rather than keep
    an earlier epoch silently (a rate that explodes is a setting to change, not noise)."""
    raise TrainingDivergedError(
        f"{type(owner).__name__}: fine-tuning diverged in epoch {epoch}: {what} "
        f"(lr={owner.lr:g}); lower lr (the default is 1e-4)")


class _Fixed(ClassifierMixin, BaseEstimator):
    """The network at one epoch, as a scikit-learn scorer sees an estimator: ``X`` are row
    numbers of the validation split, answered from its predicted probabilities."""

    def __init__(self, classes: np.ndarray, proba: np.ndarray, rows: np.ndarray):
        self.classes = classes
        self.proba = proba
        self.rows = rows
        self.classes_ = classes

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.proba[np.searchsorted(self.rows, np.asarray(X))]

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
