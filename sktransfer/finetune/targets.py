"""What fine-tuning learns to predict: one object per kind of target.

A kind owns everything that differs between kinds: encoding ``y`` (checked row by row, before
any training), the width of the linear head, the epoch-0 probe, the training loss, the
validation score, and decoding the network's outputs. There are four:

- :class:`ClassTargets`: one column of class labels; a softmax, the probe a logistic
  regression, temperature-scaled probabilities.
- :class:`LabelTargets`: several 0/1 labels per row (a multi-label indicator); one sigmoid
  per label, the probe one logistic regression per label.
- :class:`ValueTargets`: real values, one column or several; standardised inside (so each
  output weighs the same), the probe a ridge regression, predictions in the original units.
- :class:`TaskTargets`: several tasks of either of the first and third kinds on one network
  (multitask learning), each with its slice of the head; a row may lack some tasks' labels,
  and then trains the tasks it has. Each task's loss is divided by its epoch-0 validation
  loss, so that a rating in stars and a price in euros weigh the same.

A fitted estimator keeps its targets without their rows (:meth:`without_rows`), to decode
predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from numbers import Real
from typing import Any, Protocol

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import balanced_accuracy_score, get_scorer, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target

from sktransfer.finetune.probe import calibrate, logistic_probe, ridge_probe, write_head

KINDS = ("classification", "regression")
# A task's loss is divided by its epoch-0 validation loss, but never by less than this: a task
# the probe already solves (a log-loss near 0) would otherwise outweigh the others a
# thousandfold and more. Log-losses and standardised squared errors are both about 0.1 to 1.
MIN_TASK_SCALE = 0.01


@dataclass
class Validation:
    """One epoch scored on the validation split.

    ``score``: greater is better (``scoring``, or minus ``loss``); ``loss``: the kind's own
    validation loss, which breaks ties; ``per_sample``: each validation row's loss, for the
    rule that an epoch must beat the kept one by more than the noise; ``record``: what
    ``history_`` keeps besides the common fields; ``calibration``: what decoding needs from
    the epoch (a temperature).
    """

    score: float
    loss: float
    per_sample: np.ndarray
    record: dict[str, Any]
    calibration: dict[str, Any] = field(default_factory=dict)


class Targets(Protocol):
    """What every kind of target does (see the module docstring)."""

    @property
    def n_outputs(self) -> int:
        """The width of the linear head."""
        ...

    def __len__(self) -> int: ...

    def split(self, validation_fraction: float, random_state: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted training and validation rows; an error naming what is too small."""
        ...

    def fit_probe(self, weight: Any, bias: Any, features: Any, train_rows: np.ndarray,
                  val_rows: np.ndarray) -> str:
        """Write the epoch-0 probe into ``weight`` and ``bias`` (the head, or its slice),
        fitted on ``features(rows)`` of the training rows; say what was fitted."""
        ...

    def loss(self, outputs: Any, rows: np.ndarray, batch: np.ndarray | None = None) -> Any:
        """The training loss (a torch scalar) of the head's ``outputs`` for ``rows``: their
        share of the mean loss over ``batch`` (default: ``rows`` itself), so that the
        losses of the parts of a batch (micro-batches) sum to the batch's loss."""
        ...

    def validate(self, outputs: np.ndarray, rows: np.ndarray, scoring: Any) -> Validation:
        ...

    def without_rows(self) -> Targets:
        """A copy that keeps what decoding needs and drops the training rows' targets."""
        ...

    def predict(self, outputs: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
        """Predictions from the head's outputs: classes, 0/1 labels, or values."""
        ...


# ---- one column of class labels -------------------------------------------------------------
@dataclass
class ClassTargets:
    """One column of class labels, encoded as ``0..n_classes-1`` (-1 where a task's label is
    missing), with the class weights of the loss, the probe and the validation log-loss."""

    classes: np.ndarray
    encoded: np.ndarray
    class_weights: np.ndarray | None = None
    column: str | None = None  # the task's name, for errors

    @classmethod
    def from_labels(cls, y: Any, class_weight: Any = None, *, column: str | None = None,
                    present: np.ndarray | None = None) -> ClassTargets:
        """Encode ``y`` (one label per sample; only the ``present`` rows when given); a clear
        error for any label that is not one, a single class, or a bad ``class_weight``."""
        rows = None if present is None else np.flatnonzero(present)
        labelled = class_labels(y if present is None else np.asarray(y, dtype=object)[rows],
                                column=column, rows=rows)
        where = "y" if column is None else f"y column {column!r}"
        check_classification_targets(labelled)
        classes, encoded = np.unique(labelled, return_inverse=True)
        if len(classes) == 0:
            raise ValueError(f"{where} is empty (0 samples): fine-tuning needs labelled "
                             "samples")
        if len(classes) < 2:
            raise ValueError(f"{where} has one class only ({classes[0]!r}): fine-tuning needs "
                             "at least two")
        if present is not None:
            counts = np.bincount(encoded, minlength=len(classes))
            if counts.min() < 2:
                rare = classes[int(np.argmin(counts))]
                rare = rare.item() if isinstance(rare, np.generic) else rare
                raise ValueError(f"{where}: class {rare!r} has {counts.min()} labelled row; "
                                 "each class needs at least 2 (one to train on, one to "
                                 "validate)")
            full = np.full(len(present), -1)
            full[present] = encoded
            encoded = full
        weights = _class_weights(class_weight, classes, encoded[encoded >= 0])
        return cls(classes, encoded, weights, column)

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.encoded)

    def split(self, validation_fraction: float, random_state: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted training and validation rows, stratified by class."""
        rows = np.arange(len(self.encoded))
        n_classes = len(self.classes)
        n_val = math.ceil(validation_fraction * len(rows))
        smallest = np.bincount(self.encoded).min()
        if n_val < n_classes or len(rows) - n_val < n_classes or smallest < 2:
            raise ValueError(
                f"{len(rows)} samples are too few for validation_fraction="
                f"{validation_fraction}: the validation and training splits each need at "
                f"least one sample of each of the {n_classes} classes (the rarest class has "
                f"{smallest})")
        train, val = train_test_split(rows, test_size=n_val, stratify=self.encoded,
                                      random_state=random_state or 0)
        return np.sort(train), np.sort(val)

    def fit_probe(self, weight: Any, bias: Any, features: Any, train_rows: np.ndarray,
                  val_rows: np.ndarray) -> str:
        coef, intercept, C = logistic_probe(features(train_rows), self.encoded[train_rows],
                                            features(val_rows), self.encoded[val_rows],
                                            self.class_weights)
        if len(self.classes) == 2:  # one decision function: logits (-z/2, z/2), same softmax
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        write_head(weight, bias, coef, intercept)
        return f"a logistic regression (C={C:g})"

    def loss(self, outputs: Any, rows: np.ndarray, batch: np.ndarray | None = None) -> Any:
        """Class-weighted cross-entropy: ``sum(w[y] * loss) / sum(w[y])`` over ``batch``."""
        targets = torch.as_tensor(self.encoded[rows], device=outputs.device)
        weights = None if self.class_weights is None else torch.as_tensor(
            self.class_weights, device=outputs.device)
        batch = rows if batch is None else batch
        total = float(len(batch)) if self.class_weights is None else \
            float(self.class_weights[self.encoded[batch]].sum())
        return torch.nn.functional.cross_entropy(outputs, targets, weight=weights,
                                                 reduction="sum") / total

    def validate(self, outputs: np.ndarray, rows: np.ndarray, scoring: Any) -> Validation:
        """The class-weighted log-loss after temperature scaling (the default score), or
        ``scoring`` on the calibrated probabilities."""
        y = self.encoded[rows]
        weights = None if self.class_weights is None else self.class_weights[y]
        temperature, proba, loss = calibrate(outputs, y, weights)
        per_sample = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0))
        if weights is not None:
            per_sample = per_sample * weights * len(weights) / weights.sum()
        score = -loss if scoring is None else float(get_scorer(scoring)(
            _EpochClassifier(proba, rows, self.classes), rows, self.classes[y]))
        predicted = proba.argmax(1)
        record = {"val_log_loss": loss,
                  "val_balanced_accuracy": balanced_accuracy_score(y, predicted),
                  "val_predicted_classes": len(np.unique(predicted)),
                  "temperature": temperature}
        return Validation(score, loss, per_sample, record, {"temperature": temperature})

    def proba(self, outputs: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
        """Class probabilities at the temperature calibrated on validation."""
        return _softmax(outputs / calibration.get("temperature", 1.0))

    def predict(self, outputs: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
        return np.asarray(self.classes[outputs.argmax(axis=1)])

    def without_rows(self) -> ClassTargets:
        return replace(self, encoded=np.empty(0, dtype=int))


# ---- several 0/1 labels per row -------------------------------------------------------------
@dataclass
class LabelTargets:
    """A multi-label indicator: one 0/1 column per label, one sigmoid per label. With
    ``class_weight="balanced"`` each label's positives and negatives weigh
    ``n / (2 * count)``, as scikit-learn balances a binary problem."""

    indicator: np.ndarray  # (n, n_labels) of 0/1
    element_weights: np.ndarray | None = None  # (n, n_labels) loss weights, or None

    @classmethod
    def from_indicator(cls, y: Any, class_weight: Any = None) -> LabelTargets:
        indicator = np.asarray(y)
        if class_weight not in (None, "balanced"):
            raise ValueError("class_weight for several labels per row is None or "
                             f"'balanced', got {class_weight!r}")
        indicator = indicator.astype(int)
        for label in range(indicator.shape[1]):
            if len(np.unique(indicator[:, label])) < 2:
                raise ValueError(f"y column {label} is {indicator[0, label]} in every row: "
                                 "each label needs rows with and without it")
        weights = None
        if class_weight == "balanced":
            n = len(indicator)
            positives = indicator.sum(axis=0)
            weights = np.where(indicator == 1, n / (2.0 * positives),
                               n / (2.0 * (n - positives))).astype(np.float32)
        return cls(indicator, weights)

    @property
    def n_outputs(self) -> int:
        return int(self.indicator.shape[1])

    def __len__(self) -> int:
        return len(self.indicator)

    def split(self, validation_fraction: float, random_state: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
        train, val = _random_split(len(self), validation_fraction, random_state)
        for label in range(self.n_outputs):
            for name, rows in (("training", train), ("validation", val)):
                if len(np.unique(self.indicator[rows, label])) < 2:
                    raise ValueError(
                        f"y column {label}: the {name} split has only "
                        f"{self.indicator[rows[0], label]}s ({len(self)} samples, "
                        f"validation_fraction={validation_fraction}); each label needs both "
                        "values in both splits: give more samples")
        return train, val

    def fit_probe(self, weight: Any, bias: Any, features: Any, train_rows: np.ndarray,
                  val_rows: np.ndarray) -> str:
        train_x, val_x = features(train_rows), features(val_rows)
        Cs = []
        for label in range(self.n_outputs):
            weights = None
            if self.element_weights is not None:  # this label's balance, as a class weight
                column = self.element_weights[:, label]
                weights = np.array([column[self.indicator[:, label] == value][0]
                                    for value in (0, 1)], dtype=np.float32)
            coef, intercept, C = logistic_probe(train_x, self.indicator[train_rows, label],
                                                val_x, self.indicator[val_rows, label],
                                                weights)
            write_head(weight[label:label + 1], bias[label:label + 1], coef, intercept)
            Cs.append(C)
        return f"one logistic regression per label (C={', '.join(f'{C:g}' for C in Cs)})"

    def loss(self, outputs: Any, rows: np.ndarray, batch: np.ndarray | None = None) -> Any:
        """The (weighted) log-loss of every label, averaged over the labels of ``batch``."""
        targets = torch.as_tensor(self.indicator[rows], dtype=outputs.dtype,
                                  device=outputs.device)
        weights = None if self.element_weights is None else torch.as_tensor(
            self.element_weights[rows], device=outputs.device)
        total = len(rows if batch is None else batch) * self.n_outputs
        return torch.nn.functional.binary_cross_entropy_with_logits(
            outputs, targets, weight=weights, reduction="sum") / total

    def validate(self, outputs: np.ndarray, rows: np.ndarray, scoring: Any) -> Validation:
        """The mean log-loss of the labels (the default score), or ``scoring`` on the
        (n_samples, n_labels) probabilities."""
        y = self.indicator[rows]
        logits = np.asarray(outputs, dtype=np.float64)
        # log σ(x) = -log(1 + e^-x), log(1 - σ(x)) = -log(1 + e^x): finite for any logit,
        # where clipping a float32 probability rounds 1 - 1e-15 back to 1 and gives log(0)
        elements = y * np.logaddexp(0.0, -logits) + (1 - y) * np.logaddexp(0.0, logits)
        proba = _sigmoid(logits)
        if self.element_weights is not None:
            elements = elements * self.element_weights[rows]
        per_sample = elements.mean(axis=1)
        loss = float(per_sample.mean())
        score = -loss if scoring is None else float(get_scorer(scoring)(
            _EpochClassifier(proba, rows, np.arange(self.n_outputs), True),
            rows, y))
        record = {"val_log_loss": loss,
                  "val_label_accuracy": float(((proba > 0.5) == y).mean())}
        return Validation(score, loss, per_sample, record)

    def proba(self, outputs: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
        return _sigmoid(outputs)

    def predict(self, outputs: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
        return (outputs > 0).astype(int)

    def without_rows(self) -> LabelTargets:
        return replace(self, indicator=np.empty((0, self.n_outputs), dtype=int),
                       element_weights=None)


# ---- real values ----------------------------------------------------------------------------
@dataclass
class ValueTargets:
    """Real values, one column per output, standardised inside (NaN where a task's value is
    missing); predictions come back in the original units (1-D when ``y`` was)."""

    standardized: np.ndarray  # (n, n_outputs)
    mean: np.ndarray
    scale: np.ndarray
    one_column: bool
    names: list[str]

    @classmethod
    def from_values(cls, y: Any, *, names: list[str] | None = None,
                    present: np.ndarray | None = None,
                    estimator: str = "this estimator") -> ValueTargets:
        """Check and standardise ``y``: a clear error naming the row and column for a value
        that is not a finite number, and naming the column for a constant one."""
        values, one_column = _as_columns(y)
        if names is None:
            names = (_columns(y)[0] if hasattr(y, "columns")
                     else [str(i) for i in range(values.shape[1])])
        rows = np.arange(len(values)) if present is None else np.flatnonzero(present)
        if present is None and len(rows) < 2:
            raise ValueError(f"y has {len(rows)} sample(s): fine-tuning needs n_samples = 2 or "
                             "more, to train on and to validate")
        numbers = np.full(values.shape, np.nan)
        for j, name in enumerate(names):
            where = "y" if one_column and present is None else f"y column {name!r}"
            for row in rows:
                value = values[row, j]
                if isinstance(value, complex | np.complexfloating):
                    raise ValueError(f"Complex data not supported: {where} row {row} is "
                                     f"{value!r}")
                if isinstance(value, bool | np.bool_) or not isinstance(value, Real | np.number):
                    kind = "a text" if isinstance(value, str) else type(value).__name__
                    raise ValueError(f"{where} row {row}: {value!r} is {kind}, not a number: "
                                     f"{estimator} learns real values; "
                                     f"{_suggest(estimator, 'classification')}")
                if not math.isfinite(float(value)):
                    raise ValueError(f"{where} row {row}: {value!r} is not a finite number; "
                                     "drop the row or give it a value")
                numbers[row, j] = float(value)
            column = numbers[rows, j]
            if len(column) and np.ptp(column) == 0:
                raise ValueError(f"{where} is {column[0]:g} in every labelled row: a "
                                 "constant target teaches the network nothing")
        mean = np.nanmean(numbers[rows], axis=0)
        scale = np.nanstd(numbers[rows], axis=0)
        return cls((numbers - mean) / scale, mean, scale, one_column, names)

    @property
    def n_outputs(self) -> int:
        return int(self.standardized.shape[1])

    def __len__(self) -> int:
        return len(self.standardized)

    def split(self, validation_fraction: float, random_state: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
        return _random_split(len(self), validation_fraction, random_state)

    def fit_probe(self, weight: Any, bias: Any, features: Any, train_rows: np.ndarray,
                  val_rows: np.ndarray) -> str:
        coef, intercept, alpha = ridge_probe(features(train_rows),
                                             self.standardized[train_rows])
        write_head(weight, bias, coef, intercept)
        return f"a ridge regression (alpha={alpha:g})"

    def loss(self, outputs: Any, rows: np.ndarray, batch: np.ndarray | None = None) -> Any:
        """The squared error of the standardised values, averaged over those of ``batch``."""
        targets = torch.as_tensor(self.standardized[rows], dtype=outputs.dtype,
                                  device=outputs.device)
        total = len(rows if batch is None else batch) * self.n_outputs
        return torch.nn.functional.mse_loss(outputs, targets, reduction="sum") / total

    def validate(self, outputs: np.ndarray, rows: np.ndarray, scoring: Any) -> Validation:
        """The mean squared error of the standardised values (the default score), or
        ``scoring`` on predictions in the original units."""
        errors = (outputs - self.standardized[rows]) ** 2
        per_sample = errors.mean(axis=1)
        loss = float(per_sample.mean())
        truth = self.decode(self.standardized[rows])
        predicted = self.decode(outputs)
        score = -loss if scoring is None else float(get_scorer(scoring)(
            _EpochRegressor(predicted, rows), rows, truth))
        record = {"val_mse": loss, "val_r2": float(r2_score(truth, predicted))}
        return Validation(score, loss, per_sample, record)

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Outputs in the original units; one column as a 1-D array."""
        values = np.asarray(outputs * self.scale + self.mean)
        return values[:, 0] if self.one_column else values

    def predict(self, outputs: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
        return self.decode(outputs)

    def without_rows(self) -> ValueTargets:
        return replace(self, standardized=np.empty((0, self.n_outputs)))


# ---- several tasks --------------------------------------------------------------------------
@dataclass
class Task:
    """One task of :class:`TaskTargets`: its column, kind, targets, the rows that have a
    label, and its slice ``start:stop`` of the head."""

    name: str
    kind: str
    targets: ClassTargets | ValueTargets
    present: np.ndarray
    start: int
    stop: int


@dataclass
class TaskTargets:
    """Several tasks on one network (see the module docstring). ``weights``: the training
    loss's weight of each task, given (``task_weights=``) or, by default, one over the task's
    epoch-0 validation loss (``scales``, at least ``MIN_TASK_SCALE``), which the first
    validation sets."""

    tasks: list[Task]
    weights: np.ndarray | None = None
    scales: np.ndarray | None = None

    @classmethod
    def from_columns(cls, y: Any, *, tasks: dict[str, str] | None = None,
                     task_weights: dict[str, float] | None = None, class_weight: Any = None,
                     allow_missing: bool = True, kind: str | None = None,
                     estimator: str = "this estimator") -> TaskTargets:
        """One task per column of ``y`` (a DataFrame or a 2-D array), of the kind ``tasks``
        names or, by default, the kind the column's values say (continuous: regression;
        integers, strings, booleans, categories: classification). ``kind``: every column
        must be of that kind (an error says which estimator takes the others)."""
        names, columns = _columns(y)
        for name in tasks or {}:
            if name not in names:
                raise ValueError(f"tasks names column {name!r}, which y does not have "
                                 f"(it has {', '.join(map(repr, names))})")
        for name, given in (tasks or {}).items():
            if given not in KINDS:
                raise ValueError(f"tasks[{name!r}] = {given!r}: a task is 'classification' "
                                 "or 'regression'")
        built, start = [], 0
        for name, column in zip(names, columns, strict=True):
            present = np.array([not _missing(value) for value in column], dtype=bool)
            if not present.any():
                raise ValueError(f"y column {name!r} has no labels at all (every row is "
                                 "missing)")
            if not allow_missing and not present.all():
                row = int(np.flatnonzero(~present)[0])
                raise ValueError(f"y column {name!r} row {row}: {column[row]!r} is a missing "
                                 "label; drop the row or give it a label")
            inferred = infer_kind(column[present])
            if kind is not None and inferred != kind:
                raise ValueError(f"y column {name!r} holds {_WHAT[inferred]}: {estimator} "
                                 f"learns {_WHAT[kind]}; {_suggest(estimator, inferred)}")
            kind_here = kind or (tasks or {}).get(name) or inferred
            task_targets: ClassTargets | ValueTargets
            if kind_here == "classification":
                task_targets = ClassTargets.from_labels(
                    column, "balanced" if class_weight == "balanced" else None, column=name,
                    present=present)
            else:
                task_targets = ValueTargets.from_values(column, names=[name], present=present)
            width = task_targets.n_outputs
            built.append(Task(name, kind_here, task_targets, present, start, start + width))
            start += width
        weights = None
        if task_weights is not None:
            weights = np.ones(len(built))
            for name, weight in task_weights.items():
                if name not in names:
                    raise ValueError(f"task_weights names column {name!r}, which y does not "
                                     "have")
                if isinstance(weight, bool) or not isinstance(weight, Real) \
                        or not math.isfinite(weight) or weight < 0:
                    raise ValueError(f"task_weights[{name!r}] = {weight!r}: a task weight is "
                                     "a finite number, 0 or more")
                weights[names.index(name)] = float(weight)
        return cls(built, weights)

    @property
    def n_outputs(self) -> int:
        return self.tasks[-1].stop

    @property
    def kinds(self) -> dict[str, str]:
        return {task.name: task.kind for task in self.tasks}

    def __len__(self) -> int:
        return len(self.tasks[0].present)

    def split(self, validation_fraction: float, random_state: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
        train, val = _random_split(len(self), validation_fraction, random_state)
        for task in self.tasks:
            for name, rows in (("training", train), ("validation", val)):
                labelled = rows[task.present[rows]]
                if isinstance(task.targets, ClassTargets):
                    encoded = task.targets.encoded[labelled]
                    seen = len(np.unique(encoded))
                    if (name == "training" and seen < task.targets.n_outputs) or seen == 0:
                        raise ValueError(
                            f"y column {task.name!r}: the {name} split holds {seen} of its "
                            f"{task.targets.n_outputs} classes ({len(self)} samples, "
                            f"validation_fraction={validation_fraction}); give more "
                            "labelled rows")
                elif len(labelled) < 2:
                    raise ValueError(f"y column {task.name!r}: the {name} split has "
                                     f"{len(labelled)} labelled rows; give more")
        return train, val

    def fit_probe(self, weight: Any, bias: Any, features: Any, train_rows: np.ndarray,
                  val_rows: np.ndarray) -> str:
        done = []
        for task in self.tasks:
            done.append(f"{task.name}: " + task.targets.fit_probe(
                weight[task.start:task.stop], bias[task.start:task.stop], features,
                train_rows[task.present[train_rows]], val_rows[task.present[val_rows]]))
        return "; ".join(done)

    def loss(self, outputs: Any, rows: np.ndarray, batch: np.ndarray | None = None) -> Any:
        """The weighted sum of the tasks' losses, each over the rows of ``batch`` that have
        its label."""
        weights = self.weights if self.weights is not None else 1.0 / self._scales()
        batch = rows if batch is None else batch
        total = outputs.sum() * 0.0  # keeps the graph when no row of the batch is labelled
        for task, weight in zip(self.tasks, weights, strict=True):
            mask = task.present[rows]
            if mask.any():
                total = total + float(weight) * task.targets.loss(
                    outputs[torch.as_tensor(mask, device=outputs.device),
                            task.start:task.stop], rows[mask], batch[task.present[batch]])
        return total

    def validate(self, outputs: np.ndarray, rows: np.ndarray, scoring: Any) -> Validation:
        """Each task's validation loss divided by its epoch-0 one; the score is minus their
        mean. The first validation (epoch 0) sets those scales."""
        if scoring is not None:
            raise ValueError("scoring applies to one target; several tasks are compared by "
                             "the mean of their normalised validation losses")
        results = []
        for task in self.tasks:
            mask = task.present[rows]
            results.append(task.targets.validate(outputs[mask, task.start:task.stop],
                                                 rows[mask], None))
        if self.scales is None:
            self.scales = np.array([max(result.loss, MIN_TASK_SCALE) for result in results])
        normalised = np.array([result.loss for result in results]) / self.scales
        per_row = np.zeros(len(rows))
        counts = np.zeros(len(rows))
        for task, result, scale in zip(self.tasks, results, self.scales, strict=True):
            mask = task.present[rows]
            per_row[mask] += result.per_sample / scale
            counts[mask] += 1
        loss = float(normalised.mean())
        record = {"val_tasks": {task.name: {"loss": result.loss, **result.record}
                                for task, result in zip(self.tasks, results, strict=True)}}
        calibration = {task.name: result.calibration
                       for task, result in zip(self.tasks, results, strict=True)}
        return Validation(-loss, loss, per_row / np.maximum(counts, 1), record, calibration)

    def proba(self, outputs: np.ndarray, calibration: dict[str, Any]) -> list[np.ndarray]:
        """One array of class probabilities per classification task."""
        return [task.targets.proba(out, cal) for task, out, cal in
                self.task_outputs(outputs, calibration) if isinstance(task.targets,
                                                                      ClassTargets)]

    def predict(self, outputs: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
        """One column per task: its class, or its value."""
        return np.column_stack([task.targets.predict(out, cal) for task, out, cal in
                                self.task_outputs(outputs, calibration)])

    def _scales(self) -> np.ndarray:
        return self.scales if self.scales is not None else np.ones(len(self.tasks))

    def task_outputs(self, outputs: np.ndarray, calibration: dict[str, Any]
                     ) -> list[tuple[Task, np.ndarray, dict[str, Any]]]:
        return [(task, outputs[:, task.start:task.stop], calibration.get(task.name, {}))
                for task in self.tasks]

    def without_rows(self) -> TaskTargets:
        tasks = [replace(task, targets=task.targets.without_rows(),
                         present=np.empty(0, dtype=bool)) for task in self.tasks]
        return replace(self, tasks=tasks)


# ---- which kind a y is ----------------------------------------------------------------------
def class_labels(y: Any, *, column: str | None = None, rows: np.ndarray | None = None
                 ) -> np.ndarray:
    """``y`` as a 1-D array of class labels, or a ValueError naming the first row that is
    missing (None, NaN) or of another kind than the rest (strings mixed with numbers):
    ``np.unique`` would sort such labels wrongly or not at all. Errors name the column and
    ``rows[i]`` for position ``i`` when they are given."""
    where = "y" if column is None else f"y column {column!r}"

    def row_of(position: int) -> int:
        return int(position if rows is None else rows[position])

    if y is None:
        raise ValueError("fine-tuning requires y to be passed, but the target y is None")
    if isinstance(y, (str, bytes)) or not hasattr(y, "__len__"):
        raise ValueError(f"y must be a sequence of class labels, one per sample, got "
                         f"{type(y).__name__}")
    array = np.asarray(y, dtype=object if _holds_objects(y) else None)
    if array.ndim != 1:
        raise ValueError(f"y must be one label per sample (1-D), got shape {array.shape}")
    if array.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(array))
        if len(bad):
            raise ValueError(f"{where} row {row_of(bad[0])}: {array[bad[0]]!r} is not a class "
                             f"label ({len(bad)} rows of y are NaN or infinite)")
    if array.dtype.kind != "O":
        return array
    kinds: dict[str, int] = {}
    for row, label in enumerate(array):
        if _missing(label):
            raise ValueError(f"{where} row {row_of(row)}: {label!r} is a missing label; drop "
                             "the row or give it a class")
        if not isinstance(label, (str, Real, np.number)):
            raise ValueError(f"{where} row {row_of(row)}: {label!r} ({type(label).__name__}) "
                             "is not a class label: labels are strings, numbers or booleans")
        kind = "a string" if isinstance(label, str) else "a number"
        kinds.setdefault(kind, row)
        if len(kinds) > 1:
            (first, at), (other, _) = list(kinds.items())[:2]
            raise ValueError(f"{where} mixes kinds of labels: row {row_of(at)} holds {first} "
                             f"({array[at]!r}), row {row_of(row)} holds {other} ({label!r}); give "
                             "every label the same type")
    return np.asarray(array.tolist())  # one kind: the dtype numpy gives it (int, str, ...)


def is_two_dimensional(y: Any) -> bool:
    """Whether ``y`` holds columns: a DataFrame, or a 2-D array or nested list."""
    if hasattr(y, "columns"):
        return True
    shape = getattr(y, "shape", None)
    if shape is None and hasattr(y, "__len__") and not isinstance(y, (str, bytes)) and len(y):
        shape = np.shape(np.asarray(y, dtype=object))
    return shape is not None and len(shape) == 2


def is_label_indicator(y: Any) -> bool:
    """Whether a 2-D ``y`` is a multi-label indicator (every value 0 or 1)."""
    try:
        return bool(type_of_target(np.asarray(y)) == "multilabel-indicator")
    except (TypeError, ValueError):  # None among numbers, mixed kinds: not an indicator
        return False


def infer_kind(values: Any) -> str:
    """``"regression"`` when scikit-learn's ``type_of_target`` says the (non-missing) values
    are continuous, ``"classification"`` for integers, strings, booleans and categories."""
    if values is None:
        return "classification"  # the error that y is missing comes from the labels' check
    values = [v for v in np.asarray(values, dtype=object).ravel().tolist() if not _missing(v)]
    if not values or any(isinstance(v, str | bool | np.bool_) for v in values):
        return "classification"
    try:
        kind = type_of_target(np.asarray(values))
    except ValueError:
        return "classification"
    return "regression" if kind.startswith("continuous") else "classification"


_WHAT = {"classification": "classes", "regression": "real values"}


def _suggest(estimator: str, kind: str) -> str:
    """Which estimators learn ``kind`` (for errors of an estimator that does not)."""
    family = "Text" if "Text" in estimator else "Image"
    single = f"FineTuned{family}" + ("Classifier" if kind == "classification" else "Regressor")
    return (f"{single} learns {_WHAT[kind]}, and FineTuned{family}Embedder learns tasks of "
            "both kinds on one network (multitask)")


def _columns(y: Any) -> tuple[list[str], list[np.ndarray]]:
    """The names and values (object arrays) of ``y``'s columns."""
    if hasattr(y, "columns"):
        names = [str(name) for name in y.columns]
        module = type(y).__module__.split(".")[0]
        if module == "polars":
            return names, [np.asarray(y[name].to_list(), dtype=object) for name in y.columns]
        return names, [y[name].to_numpy(dtype=object) for name in y.columns]
    array = np.asarray(y, dtype=object)
    if array.ndim != 2:
        raise ValueError(f"y for several tasks is a DataFrame or a 2-D array, got shape "
                         f"{array.shape}")
    return [str(j) for j in range(array.shape[1])], [array[:, j] for j in range(array.shape[1])]


def _as_columns(y: Any) -> tuple[np.ndarray, bool]:
    if y is None:
        raise ValueError("fine-tuning requires y to be passed, but the target y is None")
    if hasattr(y, "columns"):
        return np.column_stack(_columns(y)[1]), False
    array = np.asarray(y, dtype=object)
    if array.ndim == 1:
        return array[:, None], True
    if array.ndim != 2:
        raise ValueError(f"y must be 1-D (one value per sample) or 2-D (one column per "
                         f"output), got shape {array.shape}")
    return array, False


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value)) \
        or type(value).__name__ in ("NAType", "NaTType")


def _holds_objects(y: Any) -> bool:
    dtype = getattr(y, "dtype", None)
    return dtype is None or getattr(dtype, "kind", "O") == "O" or str(dtype) in (
        "category", "string")


def _random_split(n: int, validation_fraction: float, random_state: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    n_val = math.ceil(validation_fraction * n)
    if n_val < 2 or n - n_val < 2:
        raise ValueError(f"{n} samples are too few for validation_fraction="
                         f"{validation_fraction}: the validation and training splits each "
                         "need at least 2")
    train, val = train_test_split(np.arange(n), test_size=n_val,
                                  random_state=random_state or 0)
    return np.sort(train), np.sort(val)


def _class_weights(class_weight: Any, classes: np.ndarray, encoded: np.ndarray
                   ) -> np.ndarray | None:
    if class_weight is None:
        return None
    if isinstance(class_weight, dict):
        for label, weight in class_weight.items():
            if isinstance(weight, bool) or not isinstance(weight, Real) \
                    or not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"class_weight[{label!r}] = {weight!r}: a class weight "
                                 "must be a positive, finite number")
    weights = compute_class_weight(class_weight, classes=classes, y=classes[encoded])
    return np.asarray(weights, dtype=np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-logits)))


class _EpochClassifier(ClassifierMixin, BaseEstimator):
    """The network at one epoch, as a scikit-learn scorer sees a classifier: ``X`` are row
    numbers of the validation split, answered from the probabilities computed for them
    (one column per class, or per label when ``multilabel``)."""

    def __init__(self, proba: np.ndarray, rows: np.ndarray, classes: np.ndarray,
                 multilabel: bool = False):
        self.proba = proba
        self.rows = rows
        self.classes = classes
        self.multilabel = multilabel
        self.classes_ = classes

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.proba[np.searchsorted(self.rows, np.asarray(X))])

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        if self.multilabel:
            return (proba > 0.5).astype(int)
        return np.asarray(self.classes_[proba.argmax(axis=1)])


class _EpochRegressor(RegressorMixin, BaseEstimator):
    """The same for values: ``predict`` answers row numbers with the predictions computed
    for them, in the original units."""

    def __init__(self, values: np.ndarray, rows: np.ndarray):
        self.values = values
        self.rows = rows

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.values[np.searchsorted(self.rows, np.asarray(X))])
