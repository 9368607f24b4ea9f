"""The fine-tuning loop shared by the fine-tuned classifiers and embedders of
:mod:`sktransfer.finetune`.

The recipe, as parameters (LP-FT: Kumar et al., 2022; gradual unfreezing: Howard and Ruder,
2018):

0. **Start where frozen ends.** The new head is a logistic regression fitted exactly on the
   frozen features of the training split (standardised or not and its ``C`` chosen by
   cross-validated log-loss, class-weighted as ``class_weight`` says). That model is epoch 0,
   the first candidate.
1. ``head_epochs`` epochs train only the head, then one more layer group is unfrozen from the
   top every ``unfreeze_every`` epochs, up to ``unfreeze_depth`` groups.
2. Backbone groups learn at ``lr * backbone_lr_ratio``, each group below at ``layer_decay``
   times the rate of the group above; every rate warms up linearly over ``warmup_epochs`` and
   then decays along a cosine to zero at ``max_epochs``.
3. The loss is class-weighted (``class_weight="balanced"``, as in scikit-learn).
4. Every epoch is scored on a stratified validation split with ``scoring`` (default: the
   class-weighted log-loss after temperature scaling, a proper score that separates epochs a
   small split's accuracy ties, without punishing an epoch for mere over-confidence), ties
   broken by that log-loss; with the default score an epoch replaces the kept one only when
   it is better by more than one standard error. With ``early_stopping``, training stops
   after ``patience`` epochs without improvement and the best epoch is restored; without it
   (the default), the last epoch is kept. The kept epoch's temperature calibrates
   ``predict_proba``.

A fitted estimator pickles with its learned weights (as safetensors bytes) and predicts the
same after unpickling in another process. This module imports torch (``import sktransfer``
does not).
"""

from __future__ import annotations

import logging
import math
import time
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.metrics import get_scorer_names
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from sktransfer._training import Run
from sktransfer.backbones._registry import record_provenance

logger = logging.getLogger("sktransfer")


class FineTuning(BaseEstimator):
    """The shared fine-tuning loop (see the module docstring for the recipe).

    Subclasses supply ``_as_items(X)``, ``_backbone()`` (the shared frozen backbone),
    ``_trainable(n_classes, pretrained=...)`` (a ``Trainable``; ``pretrained=False`` when
    only the architecture is needed, before learned weights are loaded), ``_check(items)``
    (raise for the first bad row before any training), ``_augments`` (whether training
    batches are augmented) and ``_batches(items, order, rng, device)``, which yields
    ``(positions, inputs)`` for the module, augmented when ``rng`` is given.
    """

    _parameter_constraints: ClassVar[dict] = {
        "model": [str],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "head_init": [StrOptions({"probe", "random"})],
        "head_epochs": [Interval(Integral, 0, None, closed="left")],
        "unfreeze_every": [Interval(Integral, 1, None, closed="left")],
        "unfreeze_depth": [None, Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "backbone_lr_ratio": [Interval(Real, 0, 1, closed="right")],
        "layer_decay": [Interval(Real, 0, 1, closed="right")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "warmup_epochs": [Interval(Real, 0, None, closed="left")],
        "class_weight": [None, StrOptions({"balanced"}), dict],
        "batchnorm": [StrOptions({"frozen", "train"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "scoring": [None, StrOptions(set(get_scorer_names())), callable],
        "early_stopping": ["boolean"],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": [None, Interval(Integral, 0, None, closed="left")],
        "progress": ["boolean"],
    }
    _augments = False
    _reuse_frozen = True  # False runs the frozen layers every epoch (to measure the gain)

    # ---- the loop -----------------------------------------------------------------------
    def _fine_tune(self, X: Any, y: Any) -> tuple[list[Any], np.ndarray]:
        """Fine-tune on (X, y); every input problem is reported before training starts."""
        from sktransfer.backbones._runtime import resolve_device

        self._validate_params()
        items, encoded = self._targets(X, y)
        weights = self._class_weights(encoded)
        train_rows, val_rows = self._split(encoded)
        device = resolve_device(self.device)
        backbone = self._backbone()
        self._remember(backbone)
        self._check(items)  # every bad row fails here, before any training
        record_provenance(self, backbone)
        seed = 0 if self.random_state is None else self.random_state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            trainable = self._trainable(len(self.classes_), pretrained=True)
            net, groups = trainable.module.to(device), trainable.groups
            self.n_layer_groups_ = len(groups)
            self.history_, self.best_epoch_, self.best_score_ = [], 0, -math.inf
            run = Run(self, net, items, encoded, train_rows, val_rows, weights, device)
            best = run.start(trainable.head)
            waited, optimizer, unfrozen_before = 0, None, None
            for epoch in range(1, self.max_epochs + 1):
                n_unfrozen = self._n_unfrozen(epoch - 1, len(groups))
                if n_unfrozen != unfrozen_before:  # a new phase: new parameter groups
                    optimizer = self._optimizer(groups, trainable.head, n_unfrozen)
                    unfrozen_before = n_unfrozen
                started = time.perf_counter()
                loss = run.train_epoch(optimizer, rng, epoch, n_unfrozen)
                candidate = run.evaluate(epoch, n_unfrozen, loss, optimizer,
                                         seconds=time.perf_counter() - started)
                better = run.better(candidate, best)
                if better or not self.early_stopping:
                    waited = 0 if better else waited + 1
                    best = candidate
                    run.keep(epoch, candidate[0])
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
            net.load_state_dict(run.kept)
            if self.best_epoch_ == 0 and self.head_init == "probe":
                run.refit_probe(trainable.head)
        net.eval()
        self.net_ = net
        return items, encoded

    def _targets(self, X: Any, y: Any) -> tuple[list[Any], np.ndarray]:
        items = self._as_items(X)
        y = class_labels(y)
        if len(y) != len(items):
            raise ValueError(f"X has {len(items)} samples but y has {len(y)} labels")
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has one class only ({self.classes_[0]!r}): fine-tuning "
                             "needs at least two")
        return items, encoded

    def _class_weights(self, encoded: np.ndarray) -> np.ndarray | None:
        if self.class_weight is None:
            return None
        if isinstance(self.class_weight, dict):
            for label, weight in self.class_weight.items():
                if isinstance(weight, bool) or not isinstance(weight, Real) \
                        or not math.isfinite(weight) or weight <= 0:
                    raise ValueError(f"class_weight[{label!r}] = {weight!r}: a class weight "
                                     "must be a positive, finite number")
        return compute_class_weight(self.class_weight, classes=self.classes_,
                                    y=self.classes_[encoded]).astype(np.float32)

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

    def _n_unfrozen(self, step: int, n_groups: int) -> int:
        """Backbone groups trainable in training epoch ``step`` (0-based), from the top."""
        if step < self.head_epochs:
            return 0
        depth = n_groups if self.unfreeze_depth is None else min(self.unfreeze_depth, n_groups)
        return min(depth, 1 + (step - self.head_epochs) // self.unfreeze_every)

    def _optimizer(self, groups: list[list[Any]], head: list[Any], n_unfrozen: int) -> Any:
        param_groups = [{"params": head, "lr": self.lr, "base_lr": self.lr, "name": "head"}]
        for depth in range(n_unfrozen):  # depth 0 = the group just below the head
            index = len(groups) - 1 - depth
            rate = self.lr * self.backbone_lr_ratio * self.layer_decay ** depth
            param_groups.append({"params": groups[index], "lr": rate, "base_lr": rate,
                                 "name": f"group{index}"})
        trainable = {id(p) for group in param_groups for p in group["params"]}
        for group in groups:
            for parameter in group:
                parameter.requires_grad_(id(parameter) in trainable)
        return torch.optim.AdamW(param_groups, weight_decay=self.weight_decay)

    def _schedule(self, progress: float, start: float = 0.0) -> float:
        """The learning-rate factor after ``progress`` training epochs (fractional) of a
        parameter group that began training at epoch ``start``: a linear warm-up over
        ``warmup_epochs`` from its start, times a cosine over the whole run."""
        since = progress - start
        warm = min(1.0, (since + 1e-3) / self.warmup_epochs) if self.warmup_epochs > 0 else 1.0
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(progress / self.max_epochs, 1.0)))

    def _remember(self, backbone: Any) -> None:
        """Record in ``fit`` what prediction needs from the backbone (nothing by default)."""

    def _train_mode(self, net: Any) -> None:
        net.train()
        if self.batchnorm == "frozen":  # small target sets estimate these statistics badly
            for module in net.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _report(self, record: dict[str, Any]) -> None:
        message = (f"epoch {record['epoch']}/{self.max_epochs}: "
                   f"{record['unfrozen_groups']} backbone groups unfrozen, train loss "
                   f"{record['train_loss']:.4f}, validation score {record['val_score']:.4f}, "
                   f"validation log-loss {record['val_log_loss']:.4f}")
        logger.info(message)
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"{type(self).__name__} {message}")

    # ---- outputs ------------------------------------------------------------------------
    def _outputs(self, items: list[Any], rows: np.ndarray, *, features: bool) -> np.ndarray:
        """Class probabilities, or the penultimate features, of ``items[rows]``."""
        from sktransfer.backbones._runtime import resolve_device

        check_is_fitted(self, "net_")
        device = resolve_device(self.device)
        self.net_.to(device).eval()
        out = []
        with torch.inference_mode():
            for _, inputs in self._batches(items, rows, None, device):
                if features:
                    out.append(self.net_.embed(inputs).float().cpu().numpy())
                else:  # probabilities at the temperature calibrated on validation
                    logits = self.net_(inputs).float() / getattr(self, "temperature_", 1.0)
                    out.append(torch.softmax(logits, 1).cpu().numpy())
        return np.concatenate(out)

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


def class_labels(y: Any) -> np.ndarray:
    """``y`` as a 1-D array of class labels, or a ValueError naming the first row that is
    missing (None, NaN) or of another kind than the rest (strings mixed with numbers):
    ``np.unique`` would sort such labels wrongly or not at all."""
    if isinstance(y, (str, bytes)) or not hasattr(y, "__len__"):
        raise ValueError(f"y must be a sequence of class labels, one per sample, got "
                         f"{type(y).__name__}")
    array = np.asarray(y, dtype=object if _holds_objects(y) else None)
    if array.ndim != 1:
        raise ValueError(f"y must be one label per sample (1-D), got shape {array.shape}")
    if array.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(array))
        if len(bad):
            raise ValueError(f"y row {bad[0]}: {array[bad[0]]!r} is not a class label "
                             f"({len(bad)} rows of y are NaN or infinite)")
    if array.dtype.kind != "O":
        return array
    kinds: dict[str, int] = {}
    for row, label in enumerate(array):
        if label is None or (isinstance(label, float) and not math.isfinite(label)) \
                or type(label).__name__ in ("NAType", "NaTType"):
            raise ValueError(f"y row {row}: {label!r} is a missing label; drop the row or "
                             "give it a class")
        if not isinstance(label, (str, Real, np.number)):
            raise ValueError(f"y row {row}: {label!r} ({type(label).__name__}) is not a class "
                             "label: labels are strings, numbers or booleans")
        kind = "a string" if isinstance(label, str) else "a number"
        kinds.setdefault(kind, row)
        if len(kinds) > 1:
            (first, where), (other, _) = list(kinds.items())[:2]
            raise ValueError(f"y mixes kinds of labels: row {where} holds {first} "
                             f"({array[where]!r}), row {row} holds {other} ({label!r}); "
                             "give every label the same type")
    return np.asarray(array.tolist())  # one kind: the dtype numpy gives it (int, str, ...)


def _holds_objects(y: Any) -> bool:
    dtype = getattr(y, "dtype", None)
    return dtype is None or getattr(dtype, "kind", "O") == "O" or str(dtype) in (
        "category", "string")


class FineTunedClassifier(ClassifierMixin, FineTuning):
    """A fine-tuned network as a scikit-learn classifier."""

    def fit(self, X: Any, y: Any) -> FineTunedClassifier:
        """Fine-tune on (X, y); every input problem is reported before training starts."""
        self._fine_tune(X, y)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        items = self._as_items(X)
        return self._outputs(items, np.arange(len(items)), features=False)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)  # first: an unfitted estimator has no classes_
        return self.classes_[proba.argmax(axis=1)]


class FineTunedEmbedder(TransformerMixin, FineTuning):
    """Fine-tuned penultimate features as a scikit-learn transformer (optionally PCA'd)."""

    def fit(self, X: Any, y: Any = None) -> FineTunedEmbedder:
        """Fine-tune on (X, y), then fit the PCA (if any) on the training features."""
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        if y is None:
            raise ValueError(f"{type(self).__name__} fine-tunes on labels: fit(X, y) needs y")
        items, _ = self._fine_tune(X, y)
        features = self._outputs(items, np.arange(len(items)), features=True)
        self.pca_ = None
        if self.n_components is not None:
            if self.n_components > min(features.shape):
                raise ValueError(f"n_components={self.n_components} exceeds what "
                                 f"{features.shape[0]} samples of {features.shape[1]} "
                                 "features allow")
            self.pca_ = PCA(self.n_components, random_state=self.random_state).fit(features)
            features = self.pca_.transform(features)
        self.n_features_out_ = features.shape[1]
        return features.astype(np.float32)

    def transform(self, X: Any) -> np.ndarray:
        """The fine-tuned network's penultimate features (PCA-projected with
        ``n_components``), float32."""
        check_is_fitted(self, "net_")
        items = self._as_items(X)
        features = self._outputs(items, np.arange(len(items)), features=True)
        if self.pca_ is not None:
            features = self.pca_.transform(features)
        return features.astype(np.float32)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self.n_features_out_)], dtype=object)
