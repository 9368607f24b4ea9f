"""Fine-tuning as scikit-learn estimators: classifiers, and embedders that hand fine-tuned
features to any estimator.

The estimators hold parameters and documentation, and set every fitted attribute in one
place (``_fine_tune``). What differs between images and texts comes from the modality
(:mod:`sktransfer.modality`): images come from the shared pipeline, so a fine-tuned model sees
exactly the pixels :class:`~sktransfer.ImageEmbedder` sees. The network, its layer groups and
its head come from the backbone (``Backbone.trainable``); the epochs are one
:class:`~sktransfer.finetune.training.TrainingRun`.

Parameters are dataclass fields (``_base.parameters``), each declared once where it belongs:
the shared recipe, the kind of input, the embedders' projection. This module imports torch
(``import sktransfer`` does not).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import field
from numbers import Integral, Real
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.metrics import get_scorer_names
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from sktransfer._base import parameters
from sktransfer.backbones._contract import ImageBackbone, TextBackbone, Trainable
from sktransfer.backbones._registry import record_provenance
from sktransfer.backbones._runtime import PRECISIONS
from sktransfer.finetune.targets import (
    ClassTargets,
    LabelTargets,
    Targets,
    TaskTargets,
    ValueTargets,
    infer_kind,
    is_label_indicator,
    is_two_dimensional,
)
from sktransfer.finetune.training import Batches, Recipe, TrainingResult, TrainingRun
from sktransfer.modality import IMAGES, TEXTS, Modality

logger = logging.getLogger("sktransfer")

B = TypeVar("B", ImageBackbone, TextBackbone)  # the backbone of a kind of input


@parameters
class FineTuning(BaseEstimator, Generic[B]):
    """The shared fine-tuning recipe (see :mod:`sktransfer.finetune.training`).

    A subclass for each kind of input sets ``_modality``, the default ``model`` and its
    own parameters, and provides ``_backbone()`` and ``_trainable(backbone, n_classes)``.
    """

    model: str = field(default="", kw_only=False)
    max_epochs: int = 8
    head_init: str = "probe"
    head_epochs: int = 0
    unfreeze_every: int = 1
    unfreeze_depth: int | None = None
    lr: float = 1e-4
    backbone_lr_ratio: float = 1.0
    layer_decay: float = 0.7
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    batchnorm: str = "frozen"
    validation_fraction: float = 0.15
    scoring: Any = None
    early_stopping: bool = False
    patience: int = 5
    guard: str | None = "wise"
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    random_state: int | None = None
    progress: bool = False

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
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
        "batchnorm": [StrOptions({"frozen", "train"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "scoring": [None, StrOptions(set(get_scorer_names())), callable],
        "early_stopping": ["boolean"],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "guard": [None, StrOptions({"wise", "probe"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "precision": [StrOptions(set(PRECISIONS))],
        "random_state": [None, Interval(Integral, 0, None, closed="left")],
        "progress": ["boolean"],
    }
    _modality: ClassVar[Modality]
    _reuse_frozen = True  # False runs the frozen layers every epoch (to measure the gain)
    _keep_endpoints = False  # True keeps both ends of the guard's mix (to measure guards)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each class declares the constraints of its own parameters; a class's
        ``_parameter_constraints`` are those of all its bases and its own."""
        super().__init_subclass__(**kwargs)
        merged: dict[str, list[Any]] = {}
        for base in reversed(cls.__mro__):
            merged.update(base.__dict__.get("_parameter_constraints", {}))
        cls._parameter_constraints = merged

    # ---- what a kind of input provides ---------------------------------------------------
    def _backbone(self) -> B:
        raise NotImplementedError

    def _trainable(self, n_classes: int, *, for_unpickling: bool = False) -> Trainable:
        raise NotImplementedError

    def _fitted_input(self, backbone: B) -> dict[str, Any]:
        """Fitted attributes that prediction needs from the backbone, so that a pickled
        estimator predicts without loading pretrained weights (none by default)."""
        return {}

    @property
    def _augments(self) -> bool:
        return False

    def _batches(self, data_config: dict[str, Any] | None, decoded: Any = None) -> Batches:
        """``batches(items, order, *, rng, device)`` for this estimator's inputs (images
        need the model's ``data_config``), reading a fit's decoded inputs from ``decoded``."""
        return functools.partial(self._modality.training_batches, batch_size=self.batch_size,
                                 data_config=data_config, decoded=decoded)

    # ---- what is learned (each kind of estimator says) -------------------------------------
    def _encode_targets(self, y: Any) -> Targets:
        raise NotImplementedError

    # ---- fit ------------------------------------------------------------------------------
    def _fine_tune(self, X: Any, y: Any) -> list[Any]:
        """Fine-tune on (X, y); every input problem is reported before training starts.
        Every fitted attribute is set here."""
        from sktransfer.backbones._runtime import model_precision, resolve_device

        self._validate_params()
        targets = self._encode_targets(y)
        items = self._modality.items(X)
        if len(targets) != len(items):
            raise ValueError(f"X has {len(items)} samples but y has {len(targets)} rows")
        if isinstance(targets, TaskTargets):
            if self.scoring is not None:
                raise ValueError(f"scoring={self.scoring!r} scores one target; several tasks "
                                 "are compared by the mean of their normalised validation "
                                 "losses (leave scoring=None)")
            self._announce(targets.kinds)
        train_rows, val_rows = targets.split(self.validation_fraction, self.random_state)
        device = resolve_device(self.device)
        backbone = self._backbone()
        # as the frozen path decides: a reduced precision where the device computes it
        # natively and this model's outputs keep to float32's on the fixed probe
        precision = model_precision(backbone, self.precision, device)
        fitted_input = self._fitted_input(backbone)
        data_config = fitted_input.get("data_config_")
        # every bad row fails here; each input is decoded here, once per fit
        decoded = self._modality.decoded_store(augment=self._augments)
        self._modality.check_rows(items, data_config, decoded)
        seed = 0 if self.random_state is None else self.random_state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trainable = self._trainable(targets.n_outputs)
            run = TrainingRun(self._recipe(precision), trainable,
                              self._batches(data_config, decoded), items, targets, train_rows,
                              val_rows, device)
            result = run.fit(np.random.default_rng(seed))
        self.net_ = result.net
        self.precision_ = precision
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.best_score_ = result.best_score
        self.mixing_ = result.mixing
        self.guard_ = result.guard
        if result.endpoints is not None:
            self._endpoints = result.endpoints
        self.n_layer_groups_ = result.n_layer_groups
        self._targets, self._calibration = targets.without_rows(), result.calibration
        for name, value in {**fitted_input, **target_attributes(targets, result)}.items():
            setattr(self, name, value)
        record_provenance(self, backbone)
        return items

    def _announce(self, kinds: dict[str, str]) -> None:
        message = "tasks: " + ", ".join(f"{name} ({kind})" for name, kind in kinds.items())
        logger.info(message)
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"{type(self).__name__} {message}")

    def _recipe(self, precision: str) -> Recipe:
        """The parameters a training run reads (``precision`` as resolved)."""
        return Recipe(
            name=type(self).__name__, max_epochs=self.max_epochs, head_init=self.head_init,
            head_epochs=self.head_epochs, unfreeze_every=self.unfreeze_every,
            unfreeze_depth=self.unfreeze_depth, lr=self.lr,
            backbone_lr_ratio=self.backbone_lr_ratio, layer_decay=self.layer_decay,
            weight_decay=self.weight_decay, warmup_epochs=self.warmup_epochs,
            batchnorm=self.batchnorm, scoring=self.scoring,
            early_stopping=self.early_stopping, patience=self.patience, guard=self.guard,
            batch_size=self.batch_size, progress=self.progress, augment=self._augments,
            reuse_frozen=self._reuse_frozen, keep_endpoints=self._keep_endpoints,
            precision=precision)

    # ---- outputs --------------------------------------------------------------------------
    def _predict(self, X: Any) -> np.ndarray:
        """Classes, 0/1 labels or values, decoded by the kind of target learned."""
        check_is_fitted(self, "net_")
        outputs = self._outputs(self._modality.items(X), features=False)
        return self._targets.predict(outputs, self._calibration)

    def _outputs(self, items: list[Any], *, features: bool) -> np.ndarray:
        """The head's raw outputs (logits, standardised values), or the penultimate
        features, of ``items``."""
        from sktransfer.backbones._runtime import inference, resolve_device

        check_is_fitted(self, "net_")
        device = resolve_device(self.device)
        self.net_.to(device).eval()
        out = []
        with inference(device, self._inference_precision(device)):
            batches = self._batches(getattr(self, "data_config_", None))  # None for text
            for _, inputs in batches(items, np.arange(len(items)), rng=None, device=device):
                outputs = self.net_.embed(inputs) if features else self.net_(inputs)
                out.append(outputs.float().cpu().numpy())
        return np.concatenate(out)

    def _inference_precision(self, device: str) -> str:
        """``precision_``, where this device runs it (float16 only runs on CUDA: a model
        fine-tuned in float16 predicts in float32 elsewhere)."""
        precision = getattr(self, "precision_", "float32")  # pickled before precision_
        return "float32" if precision == "float16" and not device.startswith("cuda") \
            else precision

    # ---- pickling: weights travel as safetensors bytes ------------------------------------
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

            net = self._trainable(self._targets.n_outputs, for_unpickling=True).module
            net.load_state_dict(load(blob))
            net.eval()
            self.net_ = net

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


@parameters
class FineTunedClassifier(ClassifierMixin, FineTuning[Any]):
    """A fine-tuned network as a scikit-learn classifier: one column of classes, several 0/1
    labels per row (a multi-label indicator), or several columns of classes
    (multiclass-multioutput)."""

    class_weight: str | dict[Any, float] | None = None

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "class_weight": [None, StrOptions({"balanced"}), dict]}

    def fit(self, X: Any, y: Any) -> FineTunedClassifier:
        """Fine-tune on (X, y); every input problem is reported before training starts."""
        self._fine_tune(X, y)
        return self

    def _encode_targets(self, y: Any) -> Targets:
        if not is_two_dimensional(y):
            return ClassTargets.from_labels(y, self.class_weight)
        if np.shape(y)[1] == 1:
            raise ValueError(f"y must be one label per sample (1-D), got shape "
                             f"{np.shape(y)}: pass y.ravel() (or the column itself)")
        if is_label_indicator(y):
            return LabelTargets.from_indicator(y, self.class_weight)
        if isinstance(self.class_weight, dict):
            raise ValueError("class_weight for several columns of classes is None or "
                             f"'balanced', got {self.class_weight!r}")
        return TaskTargets.from_columns(y, kind="classification", allow_missing=False,
                                        class_weight=self.class_weight,
                                        estimator=type(self).__name__)

    def predict_proba(self, X: Any) -> np.ndarray | list[np.ndarray]:
        """Class probabilities, columns in the order of ``classes_``: for several labels per
        row one column per label (its probability), for several columns of classes a list,
        one array per column, as ``MultiOutputClassifier`` gives."""
        check_is_fitted(self, "net_")
        outputs = self._outputs(self._modality.items(X), features=False)
        targets = self._targets
        assert isinstance(targets, ClassTargets | LabelTargets | TaskTargets)
        return targets.proba(outputs, self._calibration)

    def predict(self, X: Any) -> np.ndarray:
        return self._predict(X)


@parameters
class FineTunedRegressor(RegressorMixin, FineTuning[Any]):
    """A fine-tuned network as a scikit-learn regressor: one column of real values or
    several (multi-output); ``score`` is R²."""

    def fit(self, X: Any, y: Any) -> FineTunedRegressor:
        """Fine-tune on (X, y); every input problem is reported before training starts."""
        self._fine_tune(X, y)
        return self

    def _encode_targets(self, y: Any) -> Targets:
        return ValueTargets.from_values(y, estimator=type(self).__name__)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values in the units of ``y``: 1-D when ``y`` was."""
        return self._predict(X)


@parameters
class FineTunedEmbedder(TransformerMixin, FineTuning[Any]):
    """Fine-tuned penultimate features as a scikit-learn transformer (optionally PCA'd):
    the network is fine-tuned on one target of any kind, or on several tasks at once."""

    class_weight: str | dict[Any, float] | None = None
    n_components: int | None = None
    tasks: dict[str, str] | None = None
    task_weights: dict[str, float] | None = None
    cv: Any = None

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "class_weight": [None, StrOptions({"balanced"}), dict],
        "n_components": [None, Interval(Integral, 1, None, closed="left")],
        "tasks": [None, dict],
        "task_weights": [None, dict],
        "cv": [None, "cv_object"]}

    def fit(self, X: Any, y: Any = None) -> FineTunedEmbedder:
        """Fine-tune on (X, y), then fit the PCA (if any) on the training features."""
        self._fit_features(X, y)
        return self

    def _encode_targets(self, y: Any) -> Targets:
        if is_two_dimensional(y):
            return TaskTargets.from_columns(y, tasks=self.tasks, task_weights=self.task_weights,
                                            class_weight=self.class_weight)
        if self.tasks is not None or self.task_weights is not None:
            raise ValueError("tasks and task_weights name the columns of a y with several "
                             "columns (a DataFrame or a 2-D array); this y has one")
        if infer_kind(np.asarray(y, dtype=object) if y is not None else y) == "regression":
            return ValueTargets.from_values(y)
        return ClassTargets.from_labels(y, self.class_weight)

    def _fit_features(self, X: Any, y: Any) -> tuple[list[Any], np.ndarray]:
        """Fine-tune, fit the PCA, and return the training items and their features."""
        items = self._fine_tune(X, y)
        features = self._outputs(items, features=True)
        self.pca_ = None
        if self.n_components is not None:
            if self.n_components > min(features.shape):
                raise ValueError(f"n_components={self.n_components} exceeds what "
                                 f"{features.shape[0]} samples of {features.shape[1]} "
                                 "features allow")
            self.pca_ = PCA(self.n_components, random_state=self.random_state).fit(features)
            features = self.pca_.transform(features)
        self.n_features_out_ = features.shape[1]
        return items, np.asarray(features, dtype=np.float32)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fine-tune on (X, y) and return the features of X. With ``cv``, each row's
        features come from a network fine-tuned without it (out-of-fold, as scikit-learn's
        ``TargetEncoder`` does), projected by the PCA of the network fitted on every row,
        which ``transform`` uses; without ``cv``, from that network itself."""
        items, features = self._fit_features(X, y)
        if self.cv is None:
            return features
        return self._out_of_fold(items, y, np.empty_like(features))

    def _out_of_fold(self, items: list[Any], y: Any, out: np.ndarray) -> np.ndarray:
        from sklearn.base import clone
        from sklearn.model_selection import check_cv
        from sklearn.utils import _safe_indexing

        # stratified folds for one column of classes (the targets just fitted say the kind)
        classes = np.asarray(y) if isinstance(self._targets, ClassTargets) else None
        splitter = check_cv(self.cv, classes, classifier=classes is not None)
        for fold, (train, test) in enumerate(splitter.split(np.arange(len(items)), classes)):
            logger.info("%s: out-of-fold features, fold %d", type(self).__name__, fold + 1)
            fold_model = clone(self).set_params(cv=None, n_components=None)
            fold_model.fit([items[i] for i in train], _safe_indexing(y, train))
            features = fold_model.transform([items[i] for i in test])
            out[test] = self.pca_.transform(features) if self.pca_ is not None else features
        return out

    def transform(self, X: Any) -> np.ndarray:
        """The fine-tuned network's penultimate features (PCA-projected with
        ``n_components``), float32."""
        check_is_fitted(self, "net_")
        features = self._outputs(self._modality.items(X), features=True)
        if self.pca_ is not None:
            features = self.pca_.transform(features)
        return np.asarray(features, dtype=np.float32)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self.n_features_out_)], dtype=object)


def target_attributes(targets: Targets, result: TrainingResult) -> dict[str, Any]:
    """The fitted attributes that describe what was learned, by kind of target."""
    if isinstance(targets, ClassTargets):
        return {"classes_": targets.classes,
                "temperature_": result.calibration.get("temperature", 1.0)}
    if isinstance(targets, LabelTargets):
        return {"classes_": np.arange(targets.n_outputs)}
    if isinstance(targets, ValueTargets):
        return {"n_outputs_": targets.n_outputs}
    assert isinstance(targets, TaskTargets)
    tasks: dict[str, Any] = {"tasks_": targets.kinds}
    if all(task.kind == "classification" for task in targets.tasks):
        tasks["classes_"] = [task.targets.classes for task in targets.tasks
                             if isinstance(task.targets, ClassTargets)]
    return tasks


@parameters
class ImageFineTuning(FineTuning[ImageBackbone]):
    """Fine-tuning a timm network: its parameters, and its backbone from ``IMAGES``."""

    model: str = field(default=IMAGES.default_model, kw_only=False)
    weights: str = "pretrained"
    model_args: dict[str, Any] | None = None
    preprocessing: dict[str, Any] | None = None
    weights_license: str | None = None
    augment: bool = False

    _modality = IMAGES
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **IMAGES.backbone_constraints, "augment": ["boolean"]}

    @property
    def _augments(self) -> bool:
        return self.augment

    def _fitted_input(self, backbone: ImageBackbone) -> dict[str, Any]:
        return {"data_config_": backbone.data_config, "model_args_": backbone.model_args}

    def _backbone(self, weights: str | None = None,
                  model_args: dict[str, Any] | None = None) -> ImageBackbone:
        return IMAGES.load_backbone(self.model, device=self.device,
                                    weights=weights or self.weights,
                                    model_args=model_args or self.model_args,
                                    preprocessing=self.preprocessing,
                                    license=self.weights_license)

    def _trainable(self, n_classes: int, *, for_unpickling: bool = False) -> Trainable:
        if not for_unpickling:
            return self._backbone().trainable(n_classes)
        # Unpickling needs the fitted architecture only (with the arguments it was built
        # with, an img_size read from the checkpoint included): random weights, never a
        # download, since the learned weights are loaded next.
        return self._backbone("random", self.model_args_).trainable(n_classes)


@parameters
class TextFineTuning(FineTuning[TextBackbone]):
    """Fine-tuning a sentence-transformers model: its parameters, and its backbone from
    ``TEXTS``."""

    model: str = field(default=TEXTS.default_model, kw_only=False)
    max_length: int = 128

    _modality = TEXTS
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "max_length": [Interval(Integral, 8, None, closed="left")]}

    def _backbone(self) -> TextBackbone:
        return TEXTS.load_backbone(self.model, device=self.device)

    def _trainable(self, n_classes: int, *, for_unpickling: bool = False) -> Trainable:
        # sentence-transformers builds a model from its folder only, weights included.
        return self._backbone().trainable(n_classes, max_length=self.max_length)


@parameters
class FineTunedImageClassifier(ImageFineTuning, FineTunedClassifier):
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
    guard : {"wise", "probe"} or None, default="wise"
        The guard against negative transfer, with ``head_init="probe"``. After training,
        networks whose weights are mixed between the probe (epoch 0: the pretrained
        backbone and the probe head) and the kept epoch, ``(1 - m) * probe + m * kept`` for
        ``m`` in 0.25, 0.5, 0.75 and 1 (WiSE-FT, Wortsman et al., 2022), are scored on the
        validation split. The best is kept only if it beats the probe by more than the
        validation noise (one standard error of the paired per-sample differences);
        otherwise the probe is kept, refitted on every row: the model frozen features give.
        ``"probe"`` scores only the kept epoch against the probe; None keeps the trained
        network as it is. Where the validation split is too small to tell a difference,
        the guard keeps the probe. Measured on six datasets, one held out
        (docs/finetuning.md): without a guard, imbalanced reviews lost 3 points to frozen
        features; with either, no dataset did; ``"wise"`` kept a mix on one digits fold
        where ``"probe"`` fell back to the probe, 4.5 points behind, and chose as
        ``"probe"`` elsewhere.
    augment : bool, default=False
        Random crops (from the model's resize size to its input size) and horizontal flips.
        Off by default: on ELPV it cost 2-4 points of balanced accuracy (docs/finetuning.md);
        try it on natural photos with more data. Without augmentation, head-only epochs
        reuse the frozen features (computed once).
    batch_size : int, default=32
        Rows per optimizer step. Each step's forward and backward run in micro-batches
        whose activations take about 0.5 GB (measured on one row at each depth), so memory
        stays bounded whatever the network; the gradients are the whole batch's.
    device : str, default="auto"
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        The autocast precision of every forward pass, training included (the backward
        follows it). ``"auto"``, as for :class:`ImageEmbedder`: bfloat16 where the device
        computes it natively (CPUs with AVX512-BF16/AMX, CUDA devices that support it) and
        this model's bfloat16 features keep to float32's on a fixed probe; float32
        elsewhere. ``"float16"`` (CUDA only) scales the loss against underflow. On the
        packaged benchmarks bfloat16 gave the accuracy of float32 (docs/finetuning.md).
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
    mixing_ : float
        The kept epoch's weight in the kept network, as ``guard`` chose it (0: the probe;
        1: the epoch as trained).
    guard_ : list of dict
        Per weight mix the guard scored: ``mixing``, validation score and loss, and whether
        it was kept (empty without a guard).
    best_score_ : float
        Its validation score.
    n_layer_groups_ : int
        Backbone layer groups (timm's coarse groups).
    precision_ : str
        The precision training ran at (``precision`` as resolved on this machine); predicting
        uses it too.
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


@parameters
class FineTunedImageRegressor(ImageFineTuning, FineTunedRegressor):
    """Fine-tune a pretrained timm network as a scikit-learn regressor.

    ``y`` is one column of real values or several (multi-output regression, one output per
    column); the values are standardised inside and predictions come back in their units.
    Epoch 0 is the frozen solution: a ridge regression on the frozen features of the
    training split (as they are or standardised, whichever cross-validates better), its
    penalty chosen by leave-one-out cross-validation, folded into the linear head
    (refitted on every row when it is kept). Epochs are compared by the mean squared error
    of the standardised values on the validation split, or by ``scoring``
    (any scikit-learn regression scorer, on predictions in the original units). Everything
    else is the recipe of :class:`FineTunedImageClassifier`, whose parameters it takes but
    ``class_weight``; ``score`` is R².

    Attributes
    ----------
    n_outputs_ : int
        Columns of ``y``.
    history_ : list of dict
        Per epoch (0 is the probe): validation score and loss (``val_mse``, standardised),
        ``val_r2`` in the original units, learning rates, as for the classifier.

    Besides ``best_epoch_``, ``best_score_`` and the rest of the classifier's.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.finetune import FineTunedImageRegressor
    >>> rng = np.random.default_rng(0)
    >>> brightness = rng.uniform(0.1, 1.0, 40)
    >>> X = (rng.random((40, 32, 32, 3)) * 255 * brightness[:, None, None, None]).astype(
    ...     np.uint8)
    >>> reg = FineTunedImageRegressor("test_efficientnet", weights="random", max_epochs=1,
    ...                               random_state=0).fit(X, brightness)
    >>> reg.predict(X[:3]).shape, bool(reg.score(X, brightness) > 0.9)
    ((3,), True)
    """


@parameters
class FineTunedImageEmbedder(ImageFineTuning, FineTunedEmbedder):
    """Fine-tune a timm network on (X, y) in ``fit``; ``transform`` gives its fine-tuned
    penultimate features, for any scikit-learn estimator.

    Target-aware embeddings inside a Pipeline: in cross-validation the network is fine-tuned
    on the training fold only, so no label of a test fold leaks into the features. ``y`` is
    one column of classes or of real values (continuous values are regression, as
    ``type_of_target`` says), or several columns, one task each, learned together on one
    network (multitask): each task has its own head, a row may lack some tasks' labels
    (NaN, None, pandas NA) and trains the tasks it has, and each task's loss is divided by
    its epoch-0 validation loss so that tasks in different units weigh the same; epochs are
    compared by the mean of those normalised validation losses. The parameters are those of
    :class:`FineTunedImageClassifier`, plus the following.

    Parameters
    ----------
    n_components : int or None, default=None
        Project the features onto this many principal components (a PCA fitted in ``fit``
        on the training features), as MulTaBench and TabPFN's image extension do.
    tasks : dict or None, default=None
        The kind of each column of ``y``, ``{"column": "classification" | "regression"}``;
        a column left out gets the kind its values say.
    task_weights : dict or None, default=None
        The weight of each task's loss in training, ``{"column": weight}`` (missing columns
        weigh 1), instead of one over its epoch-0 validation loss.
    cv : int, cross-validation generator, iterable or None, default=None
        Cross-fitting: with ``cv``, ``fit_transform`` returns out-of-fold features (each
        row's from a network fine-tuned on the other folds, projected by the PCA of the
        network fitted on every row), as scikit-learn's ``TargetEncoder`` does, so that a
        downstream model is not trained on features of rows the network has seen; it costs
        one more fit per fold. ``transform`` always uses the network fitted on every row.
        Off by default: on ELPV it cost a gradient-boosted model 0.011 to 0.120 of
        balanced accuracy on each of four folds (the out-of-fold training features come
        from other networks than the test features; docs/finetuning.md).

    Attributes
    ----------
    n_features_out_ : int
        Width of the output.
    pca_ : PCA or None
        The fitted projection.
    tasks_ : dict
        With several columns: each task's kind, as given or inferred (the progress line and
        the log say them too).

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


@parameters
class FineTunedTextClassifier(TextFineTuning, FineTunedClassifier):
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


@parameters
class FineTunedTextRegressor(TextFineTuning, FineTunedRegressor):
    """Fine-tune a sentence-transformers model as a scikit-learn regressor: a star rating, a
    price, a score from text.

    What :class:`FineTunedImageRegressor` is for images: standardised targets, a ridge
    regression as epoch 0, predictions in the original units. Parameters are those of
    :class:`FineTunedTextClassifier` but ``class_weight``.

    Examples
    --------
    >>> from sktransfer.finetune import FineTunedTextRegressor
    >>> rated = {"a wonderful film": 5.0, "a moving, tender story": 4.5,
    ...          "brilliant and funny": 4.0, "dull and slow": 2.0, "a tedious mess": 1.0,
    ...          "far too long": 1.5}
    >>> reviews, stars = list(rated) * 4, list(rated.values()) * 4
    >>> reg = FineTunedTextRegressor(max_epochs=1, random_state=0).fit(reviews, stars)
    >>> [round(float(star)) for star in reg.predict(["a wonderful story", "a tedious mess"])]
    [5, 1]
    """


@parameters
class FineTunedTextEmbedder(TextFineTuning, FineTunedEmbedder):
    """Fine-tune a sentence-transformers model on (X, y) in ``fit``; ``transform`` gives its
    fine-tuned sentence embeddings (PCA-projected with ``n_components``).

    Parameters are those of :class:`FineTunedTextClassifier`, plus ``n_components`` as in
    :class:`FineTunedImageEmbedder`.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sktransfer.finetune import FineTunedTextEmbedder
    >>> reviews = ["a wonderful film", "a moving, tender story", "brilliant and funny",
    ...            "dull and slow", "a tedious mess", "far too long"] * 4
    >>> model = make_pipeline(FineTunedTextEmbedder(max_epochs=1, n_components=4,
    ...                                             random_state=0),
    ...                       LogisticRegression()).fit(reviews, [1, 1, 1, 0, 0, 0] * 4)
    >>> model[0].transform(reviews[:2]).shape, model.predict(["a dull mess"]).tolist()
    ((2, 4), [0])
    """
