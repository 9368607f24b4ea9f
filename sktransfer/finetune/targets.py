"""What fine-tuning learns to predict: targets encoded for training, checked row by row
before any training, and the validation split they allow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets


@dataclass
class ClassTargets:
    """One column of class labels, encoded as ``0..n_classes-1``, with the class weights of
    the loss, the probe and the validation log-loss (None: unweighted)."""

    classes: np.ndarray
    encoded: np.ndarray
    class_weights: np.ndarray | None = None

    @classmethod
    def from_labels(cls, y: Any, class_weight: Any = None) -> ClassTargets:
        """Encode ``y`` (one label per sample); a clear error for any label that is not
        one, a single class, or a bad ``class_weight``."""
        y = class_labels(y)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) == 0:
            raise ValueError("y is empty (0 samples): fine-tuning needs labelled samples")
        if len(classes) < 2:
            raise ValueError(f"y has one class only ({classes[0]!r}): fine-tuning needs at "
                             "least two")
        return cls(classes, encoded, _class_weights(class_weight, classes, encoded))

    def check_length(self, n_samples: int) -> None:
        if len(self.encoded) != n_samples:
            raise ValueError(f"X has {n_samples} samples but y has {len(self.encoded)} labels")

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


def class_labels(y: Any) -> np.ndarray:
    """``y`` as a 1-D array of class labels, or a ValueError naming the first row that is
    missing (None, NaN) or of another kind than the rest (strings mixed with numbers):
    ``np.unique`` would sort such labels wrongly or not at all."""
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
