"""The fine-tuning loop shared by :class:`~sktransfer.finetune.FineTunedImageClassifier` and
:class:`~sktransfer.finetune.FineTunedTextClassifier`.

The recipe (Howard and Ruder, 2018; Yosinski et al., 2014), as parameters:

1. ``head_epochs`` epochs train only a new linear head on the frozen pretrained backbone.
2. Then one more layer group is unfrozen from the top every ``unfreeze_every`` epochs, up to
   ``unfreeze_depth`` groups (the backbone's own groups: ``Backbone.trainable``).
3. Backbone groups learn at ``lr * backbone_lr_ratio``, each group below the top one at
   ``layer_decay`` times the rate of the group above it (discriminative learning rates).
4. A stratified validation split is scored every epoch; training stops after ``patience``
   epochs without improvement and the best epoch's weights are restored.

A fitted classifier pickles with its learned weights (as safetensors bytes) and predicts the
same after unpickling in another process. This module imports torch (``import sktransfer``
does not).
"""

from __future__ import annotations

import copy
import logging
import math
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from sktransfer.backbones._registry import warn_about_license

logger = logging.getLogger("sktransfer")


class FineTunedClassifier(ClassifierMixin, BaseEstimator):
    """The shared fine-tuning loop.

    Subclasses supply ``_as_items(X)``, ``_backbone()`` (the shared frozen backbone),
    ``_trainable(n_classes, pretrained=...)`` (a ``Trainable``; ``pretrained=False`` when
    only the architecture is needed, before learned weights are loaded), ``_check(items)``
    (raise for the first bad row before any training) and
    ``_batches(items, order, rng, device)``, which yields
    ``(positions, inputs)`` for the module, augmented when ``rng`` is given.
    """

    _parameter_constraints: ClassVar[dict] = {
        "model": [str],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "head_epochs": [Interval(Integral, 0, None, closed="left")],
        "unfreeze_every": [Interval(Integral, 1, None, closed="left")],
        "unfreeze_depth": [None, Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "backbone_lr_ratio": [Interval(Real, 0, 1, closed="right")],
        "layer_decay": [Interval(Real, 0, 1, closed="right")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batchnorm": [StrOptions({"frozen", "train"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "early_stopping": ["boolean"],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": [None, Interval(Integral, 0, None, closed="left")],
        "progress": ["boolean"],
    }

    # ---- the loop -----------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> FineTunedClassifier:
        """Fine-tune on (X, y); every input problem is reported before training starts."""
        from sktransfer.backbones._runtime import resolve_device

        self._validate_params()
        items = self._as_items(X)
        y = np.asarray(y)
        if len(y) != len(items):
            raise ValueError(f"X has {len(items)} samples but y has {len(y)} labels")
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has one class only ({self.classes_[0]!r}): a classifier "
                             "needs at least two")
        train_rows, val_rows = self._split(encoded)
        device = resolve_device(self.device)
        backbone = self._backbone()
        self._remember(backbone)
        self._check(items)  # every bad row fails here, before any training
        self.license_ = backbone.license
        self.weights_source_ = backbone.source
        warn_about_license(self.model, self.license_, getattr(self, "weights", "pretrained"))
        seed = 0 if self.random_state is None else self.random_state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            trainable = self._trainable(len(self.classes_), pretrained=True)
            net, groups, head = trainable.module, trainable.groups, trainable.head
            net.to(device)
            self.n_layer_groups_ = len(groups)
            self.history_ = []
            best_score, best_state, waited = -math.inf, None, 0
            optimizer, unfrozen_before = None, None
            for epoch in range(self.max_epochs):
                n_unfrozen = self._n_unfrozen(epoch, len(groups))
                if n_unfrozen != unfrozen_before:  # a new phase: new parameter groups
                    optimizer = self._optimizer(groups, head, n_unfrozen)
                    unfrozen_before = n_unfrozen
                loss = self._train_epoch(net, items, encoded, train_rows, optimizer, rng, device)
                score = balanced_accuracy_score(encoded[val_rows], self._proba(
                    net, items, val_rows, device).argmax(axis=1))
                self.history_.append({
                    "epoch": epoch, "unfrozen_groups": n_unfrozen, "train_loss": loss,
                    "val_balanced_accuracy": score,
                    "lrs": [group["lr"] for group in optimizer.param_groups]})
                self._report(epoch, loss, score, n_unfrozen)
                if score > best_score:
                    best_score, waited = score, 0
                    best_state = copy.deepcopy(net.state_dict())
                    self.best_epoch_ = epoch
                else:
                    waited += 1
                    if self.early_stopping and waited >= self.patience:
                        break
            net.load_state_dict(best_state)
        net.eval()
        self.best_score_ = best_score
        self.net_ = net
        return self

    def _split(self, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(len(encoded))
        n_classes = len(self.classes_)
        n_val = math.ceil(self.validation_fraction * len(rows))
        smallest = np.bincount(encoded).min()
        if n_val < n_classes or len(rows) - n_val < n_classes or smallest < 2:
            raise ValueError(
                f"{len(rows)} samples are too few for validation_fraction="
                f"{self.validation_fraction}: the validation and training splits each need "
                f"at least one sample of each of the {n_classes} classes (the rarest class has "
                f"{smallest})")
        train, val = train_test_split(rows, test_size=n_val, stratify=encoded,
                                      random_state=self.random_state or 0)
        return np.sort(train), np.sort(val)

    def _n_unfrozen(self, epoch: int, n_groups: int) -> int:
        """Backbone groups trainable in this epoch, counted from the top."""
        if epoch < self.head_epochs:
            return 0
        depth = n_groups if self.unfreeze_depth is None else min(self.unfreeze_depth, n_groups)
        return min(depth, 1 + (epoch - self.head_epochs) // self.unfreeze_every)

    def _optimizer(self, groups: list[list[Any]], head: list[Any], n_unfrozen: int) -> Any:
        param_groups = [{"params": head, "lr": self.lr, "name": "head"}]
        for depth in range(n_unfrozen):  # depth 0 = the group just below the head
            index = len(groups) - 1 - depth
            rate = self.lr * self.backbone_lr_ratio * self.layer_decay ** depth
            param_groups.append({"params": groups[index], "lr": rate, "name": f"group{index}"})
        trainable = {id(p) for group in param_groups for p in group["params"]}
        for group in groups:
            for parameter in group:
                parameter.requires_grad_(id(parameter) in trainable)
        return torch.optim.AdamW(param_groups, weight_decay=self.weight_decay)

    def _train_epoch(self, net: Any, items: list[Any], encoded: np.ndarray, rows: np.ndarray,
                     optimizer: Any, rng: np.random.Generator, device: str) -> float:
        self._train_mode(net)
        order = rng.permutation(rows)
        total, count = 0.0, 0
        for positions, inputs in self._batches(items, order, rng, device):
            batch = np.asarray(positions)
            targets = torch.as_tensor(encoded[batch], device=device)
            loss = torch.nn.functional.cross_entropy(net(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        return total / max(count, 1)

    def _proba(self, net: Any, items: list[Any], rows: np.ndarray, device: str) -> np.ndarray:
        net.eval()
        out = []
        with torch.inference_mode():
            for _, inputs in self._batches(items, rows, None, device):
                out.append(torch.softmax(net(inputs).float(), dim=1).cpu().numpy())
        return np.concatenate(out)

    def _remember(self, backbone: Any) -> None:
        """Record in ``fit`` what prediction needs from the backbone (nothing by default)."""

    def _train_mode(self, net: Any) -> None:
        net.train()
        if self.batchnorm == "frozen":  # small target sets estimate these statistics badly
            for module in net.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _report(self, epoch: int, loss: float, score: float, n_unfrozen: int) -> None:
        message = (f"epoch {epoch + 1}/{self.max_epochs}: {n_unfrozen} backbone groups "
                   f"unfrozen, train loss {loss:.4f}, validation balanced accuracy {score:.4f}")
        logger.info(message)
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"{type(self).__name__} {message}")

    # ---- prediction ---------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        from sktransfer.backbones._runtime import resolve_device

        check_is_fitted(self, "net_")
        items = self._as_items(X)
        device = resolve_device(self.device)
        self.net_.to(device)
        return self._proba(self.net_, items, np.arange(len(items)), device)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    # ---- pickling: weights travel as safetensors bytes ----------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        net = state.pop("net_", None)
        if net is not None:
            from safetensors.torch import save

            state["_net_safetensors"] = save({k: v.contiguous() for k, v in
                                              net.state_dict().items()})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        blob = state.pop("_net_safetensors", None)
        self.__dict__.update(state)
        if blob is not None:
            from safetensors.torch import load

            net = self._trainable(len(self.classes_), pretrained=False).module
            net.load_state_dict(load(blob))
            net.eval()
            self.net_ = net

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
