"""The shape every modality has, and the one embedding protocol: an :class:`Encoder` turns
items into :class:`EmbeddedBatch` es, the same for images and texts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sktransfer.exceptions import InputError

if TYPE_CHECKING:
    from sktransfer.backbones._engines import Execution

# Positions of rows, as a list or an integer array.
Rows = Sequence[int] | np.ndarray

# Work is grouped in chunks of this many batches: texts are bucketed by length within one, and
# the command line writes its output one at a time (memory stays flat whatever the count).
BATCHES_PER_CHUNK = 32


@dataclass
class EmbeddedBatch:
    """One batch of a frozen forward pass.

    ``positions``: the positions (in the items given to the encoder) of the rows of
    ``vectors``, a float32 (n, D) array; ``failed``: position -> error, for items of this
    batch that could not be embedded (under ``on_error`` other than ``"raise"``); ``keys``:
    for each of ``positions``, the content key of what was really embedded where the encoder
    read it (a file read once, its bytes hashed and decoded), else None.
    """

    positions: list[int]
    vectors: np.ndarray
    failed: dict[int, InputError]
    keys: list[bytes | None]


class Encoder(Protocol):
    """A frozen backbone opened for one call: ``execution`` says what actually runs (the
    cache stores vectors in its space), and calling it embeds ``items`` batch by batch, the
    errors naming ``rows[position]``."""

    @property
    def execution(self) -> Execution: ...

    def __call__(self, items: Sequence[Any], rows: Sequence[Any]) -> Iterator[EmbeddedBatch]:
        ...


class Modality(Protocol):
    """One kind of input (see :mod:`sktransfer.modality`).

    Each modality also has ``load_backbone(model, *, device, ...)``, whose options differ by
    kind (an image model takes weights, model arguments and preprocessing), so it is typed
    on :class:`~sktransfer.modality.ImageModality` and
    :class:`~sktransfer.modality.TextModality` rather than here.
    """

    kind: str  # "image" or "text": the CLI's --kind, compose's column roles
    default_model: str  # the model every estimator of this kind uses by default

    def items(self, X: Any) -> list[Any]:
        """X as a list of samples; errors for containers that hold none or hold them wrongly."""
        ...

    def content_key(self, item: Any, *, read_files: bool) -> bytes | None:
        """A digest of what one item holds (None: it cannot be keyed; decoding says why)."""
        ...

    def decoded_store(self, *, augment: bool) -> Any:
        """Where one fine-tuning fit keeps its inputs decoded, so that each is decoded once
        per fit (None: this kind has nothing to keep)."""
        ...

    def check_rows(self, items: Sequence[Any], data_config: dict[str, Any] | None = None,
                   decoded: Any = None) -> None:
        """Raise the error of the first item that cannot be used, before any training;
        what is decoded goes into ``decoded``."""
        ...

    def training_batches(self, items: Sequence[Any], order: Rows, *,
                         batch_size: int, device: str, rng: np.random.Generator | None = None,
                         data_config: dict[str, Any] | None = None, decoded: Any = None
                         ) -> Iterator[tuple[list[int], Any]]:
        """``(positions, inputs)`` for a trainable module, batch by batch in ``order``,
        reading and filling ``decoded``."""
        ...
