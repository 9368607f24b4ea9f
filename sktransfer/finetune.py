"""Fine-tuning as a scikit-learn classifier: train a new head, then unfreeze gradually.

The estimators here hold parameters and documentation; the loop is in
:mod:`sktransfer._finetune`, images come from the shared pipeline (:mod:`sktransfer._images`),
so a fine-tuned model sees exactly the pixels :class:`~sktransfer.ImageEmbedder` sees, and the
network, its layer groups and its head come from the backbone (``Backbone.trainable``).
This module imports torch (``import sktransfer`` does not).
"""

from __future__ import annotations

import os
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval

from sktransfer._finetune import FineTunedClassifier
from sktransfer._images import Preprocessor, image_batches
from sktransfer._input import image_items, text_items, text_problem
from sktransfer.exceptions import InputError

__all__ = ["FineTunedImageClassifier", "FineTunedTextClassifier"]


class FineTunedImageClassifier(FineTunedClassifier):
    """Fine-tune a pretrained timm network as a scikit-learn classifier.

    Parameters
    ----------
    model : str, default="tf_efficientnet_lite0.packaged"
        As for :class:`ImageEmbedder`: a registered name, a timm name, or a timm folder.
    weights : str, default="pretrained"
        ``"pretrained"``, ``"random"`` (training from scratch) or a checkpoint path (its
        classifier head, of any size, is ignored: the new head is trained).
    model_args, preprocessing, weights_license : dict, dict, str or None, default=None
        As for :class:`ImageEmbedder`: arguments for ``timm.create_model``, overrides of
        the data config, and the licence of a weights file.
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
    license_ : str
        Licence of the pretrained weights (a warning says when it restricts use).
    weights_source_ : str
        Where the weights came from (a file's resolved path, a registered name, ...).
    data_config_ : dict
        The model's timm preprocessing (input size, interpolation, crop, mean, std): what
        :class:`ImageEmbedder` uses for the same model. Kept, so that predicting after
        unpickling loads no pretrained weights.

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

    _as_items = staticmethod(image_items)
    _parameter_constraints: ClassVar[dict] = {
        **FineTunedClassifier._parameter_constraints,
        "weights": [str],
        "model_args": [None, dict],
        "preprocessing": [None, dict],
        "weights_license": [None, str],
        "augment": ["boolean"],
    }

    def __init__(self, model: str = "tf_efficientnet_lite0.packaged", *,
                 weights: str = "pretrained", model_args: dict[str, Any] | None = None,
                 preprocessing: dict[str, Any] | None = None,
                 weights_license: str | None = None, max_epochs: int = 8, head_epochs: int = 1,
                 unfreeze_every: int = 1, unfreeze_depth: int | None = None, lr: float = 1e-3,
                 backbone_lr_ratio: float = 0.1, layer_decay: float = 0.5,
                 weight_decay: float = 1e-4, batchnorm: str = "frozen",
                 validation_fraction: float = 0.15, early_stopping: bool = True,
                 patience: int = 3, augment: bool = True, batch_size: int = 32,
                 device: str = "auto", random_state: int | None = None,
                 progress: bool = False):
        self.model = model
        self.weights = weights
        self.model_args = model_args
        self.preprocessing = preprocessing
        self.weights_license = weights_license
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

    def _backbone(self, weights: str | None = None,
                  model_args: dict[str, Any] | None = None) -> Any:
        from sktransfer.backbones._runtime import resolve_device
        from sktransfer.backbones.timm import get_timm_backbone

        return get_timm_backbone(self.model, weights or self.weights,
                                 resolve_device(self.device),
                                 model_args=model_args or self.model_args,
                                 preprocessing=self.preprocessing, license=self.weights_license)

    def _trainable(self, n_classes: int, *, pretrained: bool) -> Any:
        if pretrained:
            return self._backbone().trainable(n_classes)
        # Unpickling needs the fitted architecture only (with the arguments it was built
        # with, an img_size read from the checkpoint included): random weights, never a
        # download, since the learned weights are loaded next.
        return self._backbone("random", self.model_args_).trainable(n_classes)

    def _remember(self, backbone: Any) -> None:
        self.data_config_ = backbone.data_config
        self.model_args_ = backbone.model_args

    def _check(self, items: list[Any]) -> None:
        for _ in self._batches(items, np.arange(len(items)), None, "cpu"):
            pass

    def _batches(self, items: list[Any], order: Any, rng: Any, device: str) -> Any:
        """Batches from the shared image pipeline: the model's own evaluation transform
        (bit-identical to :class:`ImageEmbedder`'s input), or with ``rng`` its augmented
        form (random crop of the resized image and horizontal flip)."""
        from sktransfer.backbones._runtime import resolve_threads

        for batch in image_batches(items, range(len(items)), Preprocessor(self.data_config_),
                                   batch_size=self.batch_size, order=order,
                                   rng=rng if self.augment else None,
                                   workers=max(1, min(resolve_threads(None),
                                                      os.cpu_count() or 1))):
            yield batch.positions, batch.pixels.to(device)


class FineTunedTextClassifier(FineTunedClassifier):
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

    _as_items = staticmethod(text_items)
    _parameter_constraints: ClassVar[dict] = {
        **FineTunedClassifier._parameter_constraints,
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

    def _backbone(self) -> Any:
        from sktransfer.backbones._runtime import resolve_device
        from sktransfer.backbones.sentence import get_sentence_backbone

        return get_sentence_backbone(self.model, resolve_device(self.device), False)

    def _trainable(self, n_classes: int, *, pretrained: bool) -> Any:
        # sentence-transformers builds a model from its folder only, weights included.
        return self._backbone().trainable(n_classes, max_length=self.max_length)

    def _check(self, items: list[Any]) -> None:
        for row, text in enumerate(items):
            problem = text_problem(text)
            if problem:
                raise InputError(row, problem)

    def _batches(self, items: list[Any], order: Any, rng: Any, device: str) -> Any:
        for start in range(0, len(order), self.batch_size):
            positions = list(order[start:start + self.batch_size])
            yield positions, [items[p] for p in positions]
