"""Images and texts as fine-tuning data: the parts of the fine-tuned estimators that depend
on the kind of input (the backbone, its batches, the checks before training), shared by the
classifiers and embedders of :mod:`sktransfer.finetune`.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval

from sktransfer._finetune import FineTuning
from sktransfer._images import Preprocessor, decode_workers, image_batches
from sktransfer._input import image_items, text_items, text_row_errors

N_COMPONENTS = {"n_components": [None, Interval(Integral, 1, None, closed="left")]}


class ImageData:
    """What fine-tuning a timm network needs: the backbone, its batches, its checks."""

    _as_items = staticmethod(image_items)
    _parameter_constraints: ClassVar[dict] = {
        **FineTuning._parameter_constraints,
        "weights": [str],
        "model_args": [None, dict],
        "preprocessing": [None, dict],
        "weights_license": [None, str],
        "augment": ["boolean"],
    }

    @property
    def _augments(self) -> bool:
        return self.augment

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
                                   batch_size=self.batch_size, order=order, rng=rng,
                                   workers=decode_workers(resolve_threads(None))):
            yield batch.positions, batch.pixels.to(device)


class TextData:
    """What fine-tuning a sentence-transformers model needs."""

    _as_items = staticmethod(text_items)
    _parameter_constraints: ClassVar[dict] = {
        **FineTuning._parameter_constraints,
        "max_length": [Interval(Integral, 8, None, closed="left")],
    }

    def _backbone(self) -> Any:
        from sktransfer.backbones._runtime import resolve_device
        from sktransfer.backbones.sentence import get_sentence_backbone

        return get_sentence_backbone(self.model, resolve_device(self.device), False)

    def _trainable(self, n_classes: int, *, pretrained: bool) -> Any:
        # sentence-transformers builds a model from its folder only, weights included.
        return self._backbone().trainable(n_classes, max_length=self.max_length)

    def _check(self, items: list[Any]) -> None:
        errors = text_row_errors(items, range(len(items)))
        if errors:
            raise next(iter(errors.values()))

    def _batches(self, items: list[Any], order: Any, rng: Any, device: str) -> Any:
        for start in range(0, len(order), self.batch_size):
            positions = list(order[start:start + self.batch_size])
            yield positions, [items[p] for p in positions]
