"""Fine-tuning as scikit-learn estimators: classifiers, and embedders that hand fine-tuned
features to any estimator.

The estimators here hold parameters and documentation; the loop is in
:mod:`sktransfer._finetune`, images come from the shared pipeline (:mod:`sktransfer._images`),
so a fine-tuned model sees exactly the pixels :class:`~sktransfer.ImageEmbedder` sees, and the
network, its layer groups and its head come from the backbone (``Backbone.trainable``).
This module imports torch (``import sktransfer`` does not).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sktransfer._finetune import FineTunedClassifier, FineTunedEmbedder
from sktransfer._finetune_data import N_COMPONENTS, ImageData, TextData
from sktransfer.image import DEFAULT_IMAGE_MODEL
from sktransfer.text import DEFAULT_TEXT_MODEL

__all__ = ["FineTunedImageClassifier", "FineTunedImageEmbedder", "FineTunedTextClassifier",
           "FineTunedTextEmbedder"]

class FineTunedImageClassifier(ImageData, FineTunedClassifier):
    """Fine-tune a pretrained timm network as a scikit-learn classifier.

    Fine-tuning starts where frozen features end: the new head is a logistic regression fitted
    on the frozen features of the training split (epoch 0), then layer groups are unfrozen
    from the top. See docs/finetuning.md.

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
        Training epochs after the linear probe (0: the probe alone).
    head_init : {"probe", "random"}, default="probe"
        ``"probe"``: the head starts as a logistic regression fitted exactly on the frozen
        features, raw or standardised and with ``C`` from 1e-3 to 100, whichever has the best
        5-fold cross-validated log-loss on the training split (class-weighted as
        ``class_weight`` says).
        ``"random"``: timm's initialisation.
    head_epochs : int, default=0
        Training epochs of the head alone before any backbone group is unfrozen.
    unfreeze_every : int, default=1
        Epochs between unfreezing one more layer group, from the top.
    unfreeze_depth : int or None, default=None
        At most this many backbone groups are ever unfrozen (0: head only; None: all of
        them, eventually).
    lr : float, default=1e-4
        Peak learning rate of the head (AdamW). Small, since the head starts as the probe;
        with ``head_init="random"``, 1e-3 suits a new head better.
    backbone_lr_ratio : float, default=1.0
        The top backbone group learns at ``lr * backbone_lr_ratio``.
    layer_decay : float, default=0.7
        Each group below learns at this fraction of the rate of the group above it.
    weight_decay : float, default=1e-4
    warmup_epochs : float, default=1.0
        Every learning rate rises linearly from 0 over this many epochs, then follows a
        cosine down to 0 at ``max_epochs``.
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the loss, the probe and the validation log-loss, as in
        scikit-learn (``"balanced"``: inversely proportional to class frequencies).
    batchnorm : {"frozen", "train"}, default="frozen"
        ``"frozen"`` keeps BatchNorm running statistics as pretrained; ``"train"`` updates
        them in unfrozen groups.
    validation_fraction : float, default=0.15
        Stratified share of the training data that scores every epoch.
    scoring : str, callable or None, default=None
        How epochs are compared on the validation split: a scikit-learn scorer name or
        callable (``scorer(estimator, X, y)``, greater is better). None: the negative
        log-loss, class-weighted as ``class_weight`` says. Ties are broken by that log-loss.
    early_stopping : bool, default=False
        False: train ``max_epochs`` and keep the last epoch, where the cosine schedule has
        annealed (on ELPV it beat every selection rule we tried: docs/finetuning.md). True:
        keep the best epoch, the probe included, where an epoch must beat the kept one by
        more than the validation noise; stop after ``patience`` epochs without one. That
        guards against negative transfer, at the price of a noisy choice on small splits.
    patience : int, default=5
    augment : bool, default=False
        Random crops (from the model's resize size to its input size) and horizontal flips.
        Off by default: on ELPV it cost 2-4 points of balanced accuracy (docs/finetuning.md);
        try it on natural photos with more data. Without augmentation, head-only epochs
        reuse the frozen features (computed once).
    batch_size : int, default=32
    device : str, default="auto"
    random_state : int or None, default=None
        Seed for initialisation, the validation split, shuffling and augmentation: a fixed
        seed gives identical results on the same machine.
    progress : bool, default=False
        Print a line per epoch with the training loss and the validation scores.

    Attributes
    ----------
    classes_ : ndarray
    history_ : list of dict
        Per epoch (0 is the probe): unfrozen groups, training loss, validation score,
        log-loss and balanced accuracy, learning rates.
    best_epoch_ : int
        The epoch whose weights were kept (0: the probe).
    best_score_ : float
        Its validation score.
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
    model_args_ : dict
        The arguments the network was built with.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.finetune import FineTunedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    >>> y = np.arange(40) % 2
    >>> X[y == 1, :, :, 0] = 255
    >>> clf = FineTunedImageClassifier("test_efficientnet", weights="random", max_epochs=2,
    ...                                random_state=0).fit(X, y)
    >>> clf.predict(X[:4]).tolist(), len(clf.history_)
    ([0, 1, 0, 1], 3)
    """

    def __init__(self, model: str = DEFAULT_IMAGE_MODEL, *,
                 weights: str = "pretrained", model_args: dict[str, Any] | None = None,
                 preprocessing: dict[str, Any] | None = None,
                 weights_license: str | None = None, max_epochs: int = 8,
                 head_init: str = "probe", head_epochs: int = 0, unfreeze_every: int = 1,
                 unfreeze_depth: int | None = None, lr: float = 1e-4,
                 backbone_lr_ratio: float = 1.0, layer_decay: float = 0.7,
                 weight_decay: float = 1e-4, warmup_epochs: float = 1.0,
                 class_weight: str | dict | None = None, batchnorm: str = "frozen",
                 validation_fraction: float = 0.15, scoring: Any = None,
                 early_stopping: bool = False, patience: int = 5, augment: bool = False,
                 batch_size: int = 32, device: str = "auto", random_state: int | None = None,
                 progress: bool = False):
        self.model = model
        self.weights = weights
        self.model_args = model_args
        self.preprocessing = preprocessing
        self.weights_license = weights_license
        self.max_epochs = max_epochs
        self.head_init = head_init
        self.head_epochs = head_epochs
        self.unfreeze_every = unfreeze_every
        self.unfreeze_depth = unfreeze_depth
        self.lr = lr
        self.backbone_lr_ratio = backbone_lr_ratio
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.class_weight = class_weight
        self.batchnorm = batchnorm
        self.validation_fraction = validation_fraction
        self.scoring = scoring
        self.early_stopping = early_stopping
        self.patience = patience
        self.augment = augment
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.progress = progress


class FineTunedImageEmbedder(ImageData, FineTunedEmbedder):
    """Fine-tune a timm network on (X, y) in ``fit``; ``transform`` gives its fine-tuned
    penultimate features, for any scikit-learn estimator.

    Target-aware embeddings inside a Pipeline: in cross-validation the network is fine-tuned
    on the training fold only, so no label of a test fold leaks into the features. The
    parameters are those of :class:`FineTunedImageClassifier`, plus ``n_components``.

    Parameters
    ----------
    n_components : int or None, default=None
        Project the features onto this many principal components (a PCA fitted in ``fit``
        on the training features), as MulTaBench and TabPFN's image extension do.

    Attributes
    ----------
    n_features_out_ : int
        Width of the output.
    pca_ : PCA or None
        The fitted projection.

    Besides those of :class:`FineTunedImageClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.ensemble import HistGradientBoostingClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> from sktransfer.finetune import FineTunedImageEmbedder
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    >>> y = np.arange(40) % 2
    >>> X[y == 1, :, :, 0] = 255
    >>> model = make_pipeline(FineTunedImageEmbedder("test_efficientnet", weights="random",
    ...                                              max_epochs=1, n_components=8),
    ...                       HistGradientBoostingClassifier()).fit(X, y)
    >>> model[0].transform(X[:3]).shape
    (3, 8)
    """

    _parameter_constraints: ClassVar[dict] = {**ImageData._parameter_constraints,
                                              **N_COMPONENTS}

    def __init__(self, model: str = DEFAULT_IMAGE_MODEL, *,
                 n_components: int | None = None, weights: str = "pretrained",
                 model_args: dict[str, Any] | None = None,
                 preprocessing: dict[str, Any] | None = None,
                 weights_license: str | None = None, max_epochs: int = 8,
                 head_init: str = "probe", head_epochs: int = 0, unfreeze_every: int = 1,
                 unfreeze_depth: int | None = None, lr: float = 1e-4,
                 backbone_lr_ratio: float = 1.0, layer_decay: float = 0.7,
                 weight_decay: float = 1e-4, warmup_epochs: float = 1.0,
                 class_weight: str | dict | None = None, batchnorm: str = "frozen",
                 validation_fraction: float = 0.15, scoring: Any = None,
                 early_stopping: bool = False, patience: int = 5, augment: bool = False,
                 batch_size: int = 32, device: str = "auto", random_state: int | None = None,
                 progress: bool = False):
        self.model = model
        self.n_components = n_components
        self.weights = weights
        self.model_args = model_args
        self.preprocessing = preprocessing
        self.weights_license = weights_license
        self.max_epochs = max_epochs
        self.head_init = head_init
        self.head_epochs = head_epochs
        self.unfreeze_every = unfreeze_every
        self.unfreeze_depth = unfreeze_depth
        self.lr = lr
        self.backbone_lr_ratio = backbone_lr_ratio
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.class_weight = class_weight
        self.batchnorm = batchnorm
        self.validation_fraction = validation_fraction
        self.scoring = scoring
        self.early_stopping = early_stopping
        self.patience = patience
        self.augment = augment
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.progress = progress


class FineTunedTextClassifier(TextData, FineTunedClassifier):
    """Fine-tune a pretrained sentence-transformers model as a scikit-learn classifier.

    A linear head on the model's sentence embedding, started as a logistic regression on the
    frozen embeddings; layer groups are the word embeddings and each transformer encoder
    layer, unfrozen from the top. Parameters are those of :class:`FineTunedImageClassifier`
    (without ``weights``, ``model_args``, ``preprocessing``, ``weights_license`` and
    ``augment``), plus ``max_length`` (tokens per text). Text is never augmented, so
    head-only epochs reuse the frozen embeddings.

    Examples
    --------
    >>> from sktransfer.finetune import FineTunedTextClassifier
    >>> texts = ["a wonderful film", "a moving, tender story", "brilliant and funny",
    ...          "dull and slow", "a tedious mess", "far too long"] * 4
    >>> y = [1, 1, 1, 0, 0, 0] * 4
    >>> clf = FineTunedTextClassifier(max_epochs=2, random_state=0).fit(texts, y)
    >>> clf.predict(["a wonderful, funny film", "a dull mess"]).tolist()
    [1, 0]
    """

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, *, max_epochs: int = 8,
                 head_init: str = "probe", head_epochs: int = 0, unfreeze_every: int = 1,
                 unfreeze_depth: int | None = None, lr: float = 1e-4,
                 backbone_lr_ratio: float = 1.0, layer_decay: float = 0.7,
                 weight_decay: float = 1e-4, warmup_epochs: float = 1.0,
                 class_weight: str | dict | None = None, batchnorm: str = "frozen",
                 validation_fraction: float = 0.15, scoring: Any = None,
                 early_stopping: bool = False, patience: int = 5, max_length: int = 128,
                 batch_size: int = 32, device: str = "auto", random_state: int | None = None,
                 progress: bool = False):
        self.model = model
        self.max_epochs = max_epochs
        self.head_init = head_init
        self.head_epochs = head_epochs
        self.unfreeze_every = unfreeze_every
        self.unfreeze_depth = unfreeze_depth
        self.lr = lr
        self.backbone_lr_ratio = backbone_lr_ratio
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.class_weight = class_weight
        self.batchnorm = batchnorm
        self.validation_fraction = validation_fraction
        self.scoring = scoring
        self.early_stopping = early_stopping
        self.patience = patience
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.progress = progress


class FineTunedTextEmbedder(TextData, FineTunedEmbedder):
    """Fine-tune a sentence-transformers model on (X, y) in ``fit``; ``transform`` gives its
    fine-tuned sentence embeddings (PCA-projected with ``n_components``).

    Parameters are those of :class:`FineTunedTextClassifier`, plus ``n_components`` as in
    :class:`FineTunedImageEmbedder`.

    Examples
    --------
    >>> from sktransfer.finetune import FineTunedTextEmbedder
    >>> texts = ["a wonderful film", "a moving, tender story", "brilliant and funny",
    ...          "dull and slow", "a tedious mess", "far too long"] * 4
    >>> y = [1, 1, 1, 0, 0, 0] * 4
    >>> FineTunedTextEmbedder(max_epochs=1, n_components=4,
    ...                       random_state=0).fit(texts, y).transform(texts[:2]).shape
    (2, 4)
    """

    _parameter_constraints: ClassVar[dict] = {**TextData._parameter_constraints,
                                              **N_COMPONENTS}

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, *, n_components: int | None = None,
                 max_epochs: int = 8, head_init: str = "probe", head_epochs: int = 0,
                 unfreeze_every: int = 1, unfreeze_depth: int | None = None, lr: float = 1e-4,
                 backbone_lr_ratio: float = 1.0, layer_decay: float = 0.7,
                 weight_decay: float = 1e-4, warmup_epochs: float = 1.0,
                 class_weight: str | dict | None = None, batchnorm: str = "frozen",
                 validation_fraction: float = 0.15, scoring: Any = None,
                 early_stopping: bool = False, patience: int = 5, max_length: int = 128,
                 batch_size: int = 32, device: str = "auto", random_state: int | None = None,
                 progress: bool = False):
        self.model = model
        self.n_components = n_components
        self.max_epochs = max_epochs
        self.head_init = head_init
        self.head_epochs = head_epochs
        self.unfreeze_every = unfreeze_every
        self.unfreeze_depth = unfreeze_depth
        self.lr = lr
        self.backbone_lr_ratio = backbone_lr_ratio
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.class_weight = class_weight
        self.batchnorm = batchnorm
        self.validation_fraction = validation_fraction
        self.scoring = scoring
        self.early_stopping = early_stopping
        self.patience = patience
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.progress = progress
