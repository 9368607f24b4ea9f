"""What differs between kinds of input, in one object per kind: :data:`IMAGES` and
:data:`TEXTS`.

A modality turns X into items and checks rows, knows its default model, loads its backbone,
batches items for a forward pass (frozen: an :class:`Encoder`; fine-tuning:
``training_batches``) and sizes its worker pools. The frozen embedders, the fine-tuned
estimators, the diagnostics' baselines, ``compose`` and the command line all ask it, so each
of these facts is written once. Importing this package does not import torch.
"""

from __future__ import annotations

from sktransfer.modality._protocol import (
    BATCHES_PER_CHUNK,
    EmbeddedBatch,
    Encoder,
    Modality,
    Rows,
)
from sktransfer.modality.images import IMAGES, ImageModality
from sktransfer.modality.texts import TEXTS, TextModality

MODALITIES: dict[str, Modality] = {IMAGES.kind: IMAGES, TEXTS.kind: TEXTS}

__all__ = ["BATCHES_PER_CHUNK", "IMAGES", "MODALITIES", "TEXTS", "EmbeddedBatch", "Encoder",
           "ImageModality", "Modality", "Rows", "TextModality"]
