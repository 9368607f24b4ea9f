"""sktransfer: transfer learning as a scikit-learn step.

Importing sktransfer does not import torch; the first fit or transform does.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0.dev0"

_LAZY = {
    "ImageEmbedder": "sktransfer.image",
    "TextEmbedder": "sktransfer.text",
    "list_backbones": "sktransfer.backbones._registry",
    "list_models": "sktransfer.backbones._registry",
    "register_backbone": "sktransfer.backbones._registry",
    "BackboneSpec": "sktransfer.backbones._contract",
    "InputError": "sktransfer.exceptions",
    "ModelUnavailableError": "sktransfer.exceptions",
    "WeightsMismatchError": "sktransfer.exceptions",
    "NonFiniteOutputError": "sktransfer.exceptions",
    "CacheError": "sktransfer.exceptions",
    "EmbeddingWarning": "sktransfer.exceptions",
    "LicenseWarning": "sktransfer.exceptions",
    "WeightsReinterpretedWarning": "sktransfer.exceptions",
    "TrainingDivergedError": "sktransfer.exceptions",
    "FeatureCache": "sktransfer.cache",
    "FineTunedImageClassifier": "sktransfer.finetune",
    "FineTunedTextClassifier": "sktransfer.finetune",
    "FineTunedImageEmbedder": "sktransfer.finetune",
    "FineTunedTextEmbedder": "sktransfer.finetune",
    "FineTunedImageRegressor": "sktransfer.finetune",
    "FineTunedTextRegressor": "sktransfer.finetune",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sktransfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
