"""What an embedder or a fine-tuner may ask of a backbone, and how a named one is specified.

Every family-specific quirk (timm's layer groups and ``feature_info``, the BERT internals of a
sentence-transformers model, its maximum sequence length) lives behind these protocols, in the
family's module. Estimators use nothing else.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Family = Literal["timm", "sentence"]
Layers = Sequence[int | None]


@dataclass(frozen=True)
class BackboneSpec:
    """How to obtain one named backbone.

    Parameters
    ----------
    name : str
        The name users pass as ``model=``.
    family : {"timm", "sentence"}
        ``"timm"``: ``load()`` returns a state dict in timm's format for ``architecture``.
        ``"sentence"``: ``load()`` returns the path of a local sentence-transformers folder.
    load : callable
        Called with no argument, once per process, when the backbone is first used.
    license : str
        SPDX identifier (or a short phrase) of the weights' licence.
    n_features : int or None
        Size of the default embedding, for listings.
    architecture : str or None
        timm architecture name (family ``"timm"`` only); gives the preprocessing config.
    requires : str or None
        Distribution that must be installed for ``load`` to work (shown in errors).
    description : str
        One line for listings.
    """

    name: str
    family: Family
    load: Callable[[], Any]
    license: str
    n_features: int | None = None
    architecture: str | None = None
    requires: str | None = None
    description: str = ""

    @property
    def available(self) -> bool:
        """Whether the weights are installed on this machine (no network needed)."""
        if self.requires is None:
            return True
        module = self.requires.replace("-", "_")
        return importlib.util.find_spec(module) is not None


class Stages(Protocol):
    """A network's features as a chain of stages, one per layer group (stage ``i`` owns
    exactly the parameters of group ``i``): stage ``i``'s input is the activation at
    boundary ``i``, and boundary 0 is the network's input."""

    @property
    def n_stages(self) -> int:
        """How many stages (as many as layer groups)."""

    def run_stages(self, x: Any, start: int, stop: int) -> Any:
        """Stages ``start`` to ``stop - 1`` on the activation at boundary ``start``."""

    def embed_from(self, x: Any, start: int) -> Any:
        """The penultimate features (``embed``'s) from the activation at ``start``."""

    def stage_modules(self, index: int) -> list[Any]:
        """The modules stage ``index`` runs."""

    def storable(self, boundary: int) -> bool:
        """Whether the activation at ``boundary`` is tensors (text's boundary 0 is strings)."""

    def rows(self, x: Any) -> list[Any]:
        """A batch's activation at a boundary, one CPU tensor (or tuple) per row, in the
        dtype it was computed in."""

    def collate(self, rows: list[Any], device: str) -> Any:
        """``rows`` of :meth:`rows` as one batch's activation again, on ``device``."""


@dataclass
class Trainable:
    """A private, trainable copy of a backbone with a new linear head.

    ``module(inputs)`` gives logits; ``module.embed(inputs)`` the penultimate features the
    head reads, and ``module.classify(features)`` the logits from them. ``groups`` are the
    backbone's parameter groups from the bottom (input side) to the top, for gradual
    unfreezing; ``head`` the parameters of the new head (one linear layer). Every backbone
    parameter starts frozen (``requires_grad=False``). ``stages``, where the family's
    forward splits at its group boundaries, runs any slice of it (else None).
    """

    module: Any
    groups: list[list[Any]]
    head: list[Any]
    stages: Stages | None = None


@runtime_checkable
class Backbone(Protocol):
    """A loaded pretrained network in eval mode, shared by every estimator in the process.

    Every member any caller uses is here or in the two protocols below: the type checker
    (``mypy``, in CI) holds callers to them.
    """

    name: str
    license: str
    digest: str  # SHA-256 of the weights: names, dtypes, shapes and bytes
    source: str  # where the weights came from: a file, a folder, a registered name, "random"
    device: str
    model: Any  # the torch module itself, in eval mode
    # precision -> smallest cosine to float32 on the fixed probe, measured once per model
    precision_checks: dict[str, float]

    @property
    def modality(self) -> str:
        """The kind of input the network reads: "image" or "text"."""

    @property
    def max_seq_length(self) -> int | None:
        """Tokens per text the model reads (None for image models)."""

    def output_dims(self, layers: Layers, pooling: str) -> list[int]:
        """The width of each requested layer's pooled features, from the model's metadata."""

    def precision_cosine(self, precision: str) -> float:
        """The smallest cosine between this model's outputs on a fixed probe at
        ``precision`` and at float32 (see ``_runtime.faithful_precision``)."""


@runtime_checkable
class ImageBackbone(Backbone, Protocol):
    """An image network: engines (``backbones._engines``) run its traceable ``features``."""

    data_config: dict[str, Any]  # timm's preprocessing: input size, crop, mean, std, ...
    model_args: dict[str, Any]  # what timm.create_model was given (an img_size, ...)
    engines: dict[Any, Any]  # opened engines (ONNX sessions, compiled graphs), by settings

    @property
    def n_layers(self) -> int:
        """How many intermediate layers ``layer=`` can select."""

    @property
    def gmacs(self) -> float:
        """Multiply-accumulates of one image at the input size, in billions."""

    def normalize_layer(self, layer: int | None) -> int | None:
        """A non-negative layer index (or None for the pooled output)."""

    def check_layers(self, layers: Layers, pooling: str) -> None:
        """Raise a ValueError naming the model when ``layers``/``pooling`` do not fit it."""

    def features(self, x: Any, layers: Layers, pooling: str) -> Any:
        """Pooled, concatenated features of ``layers`` for a normalised batch (a tensor)."""

    def trainable(self, n_classes: int) -> Trainable:
        """A fresh copy of this backbone, with its weights, to fine-tune (the shared frozen
        copy is never touched)."""


@runtime_checkable
class TextBackbone(Backbone, Protocol):
    """A sentence-embedding model."""

    @property
    def n_features(self) -> int:
        """The width of a sentence embedding."""

    def encode(self, texts: list[str], *, batch_size: int, normalize: bool,
               precision: str) -> np.ndarray:
        """Embed a list of strings as a float32 (N, D) array."""

    def encode_batches(self, texts: list[str], *, batch_size: int, normalize: bool,
                       precision: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions, vectors)`` as each forward batch finishes; a text's vector does not
        depend on the other texts of its batch."""

    def trainable(self, n_classes: int, *, max_length: int | None = None) -> Trainable:
        """A fresh copy with a linear head on the sentence embedding; ``max_length`` is
        where the tokenizer truncates."""
