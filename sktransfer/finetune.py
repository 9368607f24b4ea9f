"""Fine-tuning as a scikit-learn classifier: train a new head, then unfreeze gradually.

The recipe (Howard and Ruder, 2018; Yosinski et al., 2014), as parameters:

1. ``head_epochs`` epochs train only a new linear head on the frozen pretrained backbone.
2. Then one more layer group is unfrozen from the top every ``unfreeze_every`` epochs, up to
   ``unfreeze_depth`` groups (timm's layer groups for images, encoder layers for text).
3. Backbone groups learn at ``lr * backbone_lr_ratio``, each group below the top one at
   ``layer_decay`` times the rate of the group above it (discriminative learning rates).
4. BatchNorm statistics stay frozen by default (``batchnorm="frozen"``): small target
   datasets estimate them badly.
5. A stratified validation split is scored every epoch; training stops after ``patience``
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

from sktransfer._base import as_sequence
from sktransfer._images import image_items
from sktransfer.exceptions import InputError

logger = logging.getLogger("sktransfer")


class _FineTunedClassifier(ClassifierMixin, BaseEstimator):
    """The shared fine-tuning loop; subclasses supply the network, its groups and batches."""

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
    def fit(self, X: Any, y: Any) -> _FineTunedClassifier:
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
        data = self._prepare(items)  # decodes/tokenises everything: bad rows fail here
        seed = 0 if self.random_state is None else self.random_state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            net, groups, head = self._build(len(self.classes_))
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
                loss = self._train_epoch(net, data, encoded, train_rows, optimizer, rng,
                                         device, groups, n_unfrozen)
                score = balanced_accuracy_score(encoded[val_rows], self._predict_codes(
                    net, data, val_rows, device))
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

    def _train_epoch(self, net: Any, data: Any, encoded: np.ndarray, rows: np.ndarray,
                     optimizer: Any, rng: np.random.Generator, device: str,
                     groups: list[list[Any]], n_unfrozen: int) -> float:
        self._train_mode(net, groups, n_unfrozen)
        order = rng.permutation(rows)
        total, count = 0.0, 0
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            inputs = self._batch(data, batch, rng, train=True, device=device)
            targets = torch.as_tensor(encoded[batch], device=device)
            loss = torch.nn.functional.cross_entropy(self._logits(net, inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        return total / max(count, 1)

    def _predict_codes(self, net: Any, data: Any, rows: np.ndarray, device: str) -> np.ndarray:
        return self._proba(net, data, rows, device).argmax(axis=1)

    def _proba(self, net: Any, data: Any, rows: np.ndarray, device: str) -> np.ndarray:
        net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                inputs = self._batch(data, rows[start:start + self.batch_size], None,
                                     train=False, device=device)
                out.append(torch.softmax(self._logits(net, inputs).float(), dim=1).cpu().numpy())
        return np.concatenate(out)

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
        data = self._prepare(items)
        device = resolve_device(self.device)
        self.net_.to(device)
        return self._proba(self.net_, data, np.arange(len(items)), device)

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

            net, _, _ = self._build(len(self.classes_), pretrained=False)
            net.load_state_dict(load(blob))
            net.eval()
            self.net_ = net

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class FineTunedImageClassifier(_FineTunedClassifier):
    """Fine-tune a pretrained timm network as a scikit-learn classifier.

    Parameters
    ----------
    model : str, default="tf_efficientnet_lite0.packaged"
        As for :class:`ImageEmbedder`: a registered name, a timm name, or a timm folder.
    weights : str, default="pretrained"
        ``"pretrained"``, ``"random"`` (training from scratch) or a checkpoint path.
    max_epochs : int, default=8
    head_epochs : int, default=1
        Epochs that train the new head alone before any backbone group is unfrozen.
    unfreeze_every : int, default=1
        Epochs between unfreezing one more layer group, from the top.
    unfreeze_depth : int or None, default=None
        At most this many backbone groups are ever unfrozen (0: head only, a linear probe
        trained by gradient descent; None: all of them, eventually).
    lr : float, default=1e-3
        Learning rate of the head (AdamW).
    backbone_lr_ratio : float, default=0.1
        The top backbone group learns at ``lr * backbone_lr_ratio``.
    layer_decay : float, default=0.5
        Each group below learns at this fraction of the rate of the group above it.
    weight_decay : float, default=1e-4
    batchnorm : {"frozen", "train"}, default="frozen"
        ``"frozen"`` keeps BatchNorm running statistics as pretrained; ``"train"`` updates
        them in unfrozen groups.
    validation_fraction : float, default=0.15
        Stratified share of the training data scored after every epoch.
    early_stopping : bool, default=True
        Stop after ``patience`` epochs without a better validation score; either way the
        best epoch's weights are restored.
    patience : int, default=3
    augment : bool, default=True
        Random crops (from the model's resize size to its input size) and horizontal flips.
    batch_size : int, default=32
    device : str, default="auto"
    random_state : int or None, default=None
        Seed for initialisation, the validation split, shuffling and augmentation: a fixed
        seed gives identical results on the same machine.
    progress : bool, default=False
        Print a line per epoch with the training loss and the validation score.

    Attributes
    ----------
    classes_ : ndarray
    history_ : list of dict
        Per epoch: unfrozen groups, training loss, validation balanced accuracy, learning rates.
    best_epoch_ : int
        The epoch whose weights were kept.
    best_score_ : float
        Its validation balanced accuracy.
    n_layer_groups_ : int
        Backbone layer groups (timm's coarse groups).

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.finetune import FineTunedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    >>> y = np.arange(40) % 2
    >>> X[y == 1, :, :, 0] = 255
    >>> clf = FineTunedImageClassifier("test_efficientnet", weights="random", max_epochs=3,
    ...                                random_state=0).fit(X, y)
    >>> clf.predict(X[:4]).tolist(), len(clf.history_)
    ([0, 1, 0, 1], 3)
    """

    @staticmethod
    def _as_items(X: Any) -> list[Any]:
        return image_items(X)
    _parameter_constraints: ClassVar[dict] = {
        **_FineTunedClassifier._parameter_constraints,
        "weights": [str],
        "augment": ["boolean"],
    }

    def __init__(self, model: str = "tf_efficientnet_lite0.packaged", *,
                 weights: str = "pretrained", max_epochs: int = 8, head_epochs: int = 1,
                 unfreeze_every: int = 1, unfreeze_depth: int | None = None, lr: float = 1e-3,
                 backbone_lr_ratio: float = 0.1, layer_decay: float = 0.5,
                 weight_decay: float = 1e-4, batchnorm: str = "frozen",
                 validation_fraction: float = 0.15, early_stopping: bool = True,
                 patience: int = 3, augment: bool = True, batch_size: int = 32,
                 device: str = "auto", random_state: int | None = None,
                 progress: bool = False):
        self.model = model
        self.weights = weights
        self.max_epochs = max_epochs
        self.head_epochs = head_epochs
        self.unfreeze_every = unfreeze_every
        self.unfreeze_depth = unfreeze_depth
        self.lr = lr
        self.backbone_lr_ratio = backbone_lr_ratio
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.batchnorm = batchnorm
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.patience = patience
        self.augment = augment
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.progress = progress

    def _shared(self, pretrained: bool = True) -> Any:
        from sktransfer.backbones._runtime import resolve_device
        from sktransfer.backbones.timm import get_timm_backbone

        return get_timm_backbone(self.model, self.weights if pretrained else "random",
                                 resolve_device(self.device))

    def _build(self, n_classes: int, pretrained: bool = True) -> tuple[Any, list, list]:
        from timm.models import group_parameters

        shared = self._shared(pretrained)
        net = copy.deepcopy(shared.model).cpu()  # the shared frozen copy stays untouched
        net.reset_classifier(n_classes)
        self.data_config_ = shared.data_config
        head = list(net.get_classifier().parameters())
        head_ids = {id(p) for p in head}
        named = dict(net.named_parameters())
        groups = [[named[name] for name in names if id(named[name]) not in head_ids]
                  for names in group_parameters(net, net.group_matcher(coarse=True)).values()]
        return net, [g for g in groups if g], head

    def _prepare(self, items: list[Any]) -> np.ndarray:
        """Every image decoded and resized to the model's resize size, as uint8."""
        from PIL import Image

        from sktransfer._images import RowProblem, load_image

        if not hasattr(self, "data_config_"):
            self.data_config_ = self._shared().data_config
        height, width = (int(v) for v in self.data_config_["input_size"][1:])
        crop_pct = self.data_config_.get("crop_pct") or 0.875
        scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
        out = np.empty((len(items), scale[0], scale[1], 3), dtype=np.uint8)
        for row, item in enumerate(items):
            try:
                image = load_image(item)
            except RowProblem as problem:
                raise InputError(row, str(problem)) from None
            out[row] = np.asarray(image.resize((scale[1], scale[0]), Image.Resampling.BICUBIC))
        return out

    def _batch(self, data: np.ndarray, rows: np.ndarray, rng: Any, *, train: bool,
               device: str) -> Any:
        height, width = (int(v) for v in self.data_config_["input_size"][1:])
        pixels = data[rows]
        top_max, left_max = pixels.shape[1] - height, pixels.shape[2] - width
        if train and self.augment:
            crops = []
            for image in pixels:
                top, left = rng.integers(0, top_max + 1), rng.integers(0, left_max + 1)
                crop = image[top:top + height, left:left + width]
                crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
            pixels = np.stack(crops)
        else:
            top, left = round(top_max / 2), round(left_max / 2)
            pixels = pixels[:, top:top + height, left:left + width]
        mean = np.asarray(self.data_config_["mean"], dtype=np.float32)
        std = np.asarray(self.data_config_["std"], dtype=np.float32)
        batch = (pixels.astype(np.float32) / 255.0 - mean) / std
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device)

    def _logits(self, net: Any, inputs: Any) -> Any:
        return net(inputs)

    def _train_mode(self, net: Any, groups: list[list[Any]], n_unfrozen: int) -> None:
        net.train()
        if self.batchnorm == "frozen":
            for module in net.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()


class FineTunedTextClassifier(_FineTunedClassifier):
    """Fine-tune a pretrained sentence-transformers model as a scikit-learn classifier.

    A linear head on the model's sentence embedding; layer groups are the word embeddings and
    each transformer encoder layer, unfrozen from the top. Parameters are those of
    :class:`FineTunedImageClassifier` (without ``weights`` and ``augment``), plus
    ``max_length`` (tokens per text).

    Examples
    --------
    >>> from sktransfer.finetune import FineTunedTextClassifier
    >>> texts = ["a wonderful film", "a moving, tender story", "brilliant and funny",
    ...          "dull and slow", "a tedious mess", "far too long"] * 4
    >>> y = [1, 1, 1, 0, 0, 0] * 4
    >>> clf = FineTunedTextClassifier(max_epochs=2, lr=5e-3, random_state=0).fit(texts, y)
    >>> clf.predict(["a wonderful, funny film", "a dull mess"]).tolist()
    [1, 0]
    """

    @staticmethod
    def _as_items(X: Any) -> list[Any]:
        return list(as_sequence(X, "texts"))
    _parameter_constraints: ClassVar[dict] = {
        **_FineTunedClassifier._parameter_constraints,
        "max_length": [Interval(Integral, 8, None, closed="left")],
    }

    def __init__(self, model: str = "all-MiniLM-L6-v2", *, max_epochs: int = 8,
                 head_epochs: int = 1, unfreeze_every: int = 1,
                 unfreeze_depth: int | None = None, lr: float = 1e-3,
                 backbone_lr_ratio: float = 0.1, layer_decay: float = 0.5,
                 weight_decay: float = 1e-4, batchnorm: str = "frozen",
                 validation_fraction: float = 0.15, early_stopping: bool = True,
                 patience: int = 3, max_length: int = 128, batch_size: int = 32,
                 device: str = "auto", random_state: int | None = None,
                 progress: bool = False):
        self.model = model
        self.max_epochs = max_epochs
        self.head_epochs = head_epochs
        self.unfreeze_every = unfreeze_every
        self.unfreeze_depth = unfreeze_depth
        self.lr = lr
        self.backbone_lr_ratio = backbone_lr_ratio
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.batchnorm = batchnorm
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.patience = patience
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.progress = progress

    def _build(self, n_classes: int, pretrained: bool = True) -> tuple[Any, list, list]:
        from sktransfer.backbones._runtime import resolve_device
        from sktransfer.backbones.sentence import get_sentence_backbone

        shared = get_sentence_backbone(self.model, resolve_device(self.device), False)
        encoder = copy.deepcopy(shared.model).cpu()  # the shared frozen copy stays untouched
        encoder.max_seq_length = self.max_length  # the tokenizer truncates there
        net = SentenceClassifier(encoder, shared.n_features, n_classes)
        transformer = encoder[0].auto_model
        groups = [list(transformer.embeddings.parameters())]
        groups += [list(layer.parameters()) for layer in transformer.encoder.layer]
        for parameter in encoder.parameters():
            parameter.requires_grad_(False)
        return net, groups, list(net.head.parameters())

    def _prepare(self, items: list[Any]) -> list[str]:
        from sktransfer.text import _text_problem

        for row, text in enumerate(items):
            problem = _text_problem(text)
            if problem:
                raise InputError(row, problem)
        return list(items)

    def _batch(self, data: list[str], rows: np.ndarray, rng: Any, *, train: bool,
               device: str) -> Any:
        return [data[row] for row in rows]

    def _logits(self, net: Any, inputs: Any) -> Any:
        return net(inputs)

    def _train_mode(self, net: Any, groups: list[list[Any]], n_unfrozen: int) -> None:
        net.train()


class SentenceClassifier(torch.nn.Module):
    """A sentence-transformers encoder with a linear head on its sentence embedding."""

    def __init__(self, encoder: Any, n_features: int, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(n_features, n_classes)

    def forward(self, texts: list[str]) -> Any:
        device = self.head.weight.device
        prepare = getattr(self.encoder, "preprocess", None) or self.encoder.tokenize
        features = {key: value.to(device) if isinstance(value, torch.Tensor) else value
                    for key, value in prepare(texts).items()}
        return self.head(self.encoder(features)["sentence_embedding"])
