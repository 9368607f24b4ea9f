"""Texts: items from X, the row checks, the default sentence-transformers model, and batches
for frozen and trainable networks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sktransfer._input import text_items, text_row_errors
from sktransfer.cache import content_digest
from sktransfer.exceptions import InputError
from sktransfer.modality._protocol import BATCHES_PER_CHUNK, EmbeddedBatch, Rows

if TYPE_CHECKING:
    from sktransfer.backbones._contract import TextBackbone
    from sktransfer.backbones._engines import Execution


class TextModality:
    """Texts: strings, one per row (see :func:`sktransfer._input.text_items`)."""

    kind = "text"
    default_model = "all-MiniLM-L6-v2"

    def items(self, X: Any) -> list[Any]:
        return text_items(X)

    def content_key(self, item: Any, *, read_files: bool = False) -> bytes | None:
        if not isinstance(item, str):
            return None
        return content_digest(item.encode("utf-8", "surrogatepass"))

    def load_backbone(self, model: str, *, device: str = "auto",
                      trust_remote_code: bool = False) -> TextBackbone:
        """The shared frozen sentence-transformers backbone."""
        from sktransfer.backbones._runtime import resolve_device
        from sktransfer.backbones.sentence import get_sentence_backbone

        return get_sentence_backbone(model, resolve_device(device), trust_remote_code)

    def row_errors(self, items: Sequence[Any], rows: Sequence[Any]) -> dict[int, InputError]:
        """Position -> error naming ``rows[position]``, for each text that cannot be used."""
        return text_row_errors(items, rows)

    def decoded_store(self, *, augment: bool) -> None:
        """Texts are tokenized where they are used: nothing to keep."""
        return None

    def check_rows(self, items: Sequence[Any], data_config: dict[str, Any] | None = None,
                   decoded: Any = None) -> None:
        errors = self.row_errors(items, range(len(items)))
        if errors:
            raise next(iter(errors.values()))

    def training_batches(self, items: Sequence[Any], order: Rows, *,
                         batch_size: int, device: str, rng: np.random.Generator | None = None,
                         data_config: dict[str, Any] | None = None, decoded: Any = None
                         ) -> Iterator[tuple[list[int], Any]]:
        """Lists of strings (the trainable module tokenizes them); text is never augmented."""
        for start in range(0, len(order), batch_size):
            positions = [int(p) for p in order[start:start + batch_size]]
            yield positions, [items[p] for p in positions]

    def encoder(self, backbone: TextBackbone, execution: Execution, *, batch_size: int,
                normalize: bool, on_error: str) -> TextEncoder:
        """The frozen forward pass of :class:`~sktransfer.TextEmbedder`."""
        return TextEncoder(backbone, execution, batch_size=batch_size, normalize=normalize,
                           on_error=on_error)


class TextEncoder:
    """Texts to vectors. Within a chunk of ``BATCHES_PER_CHUNK`` batches texts are grouped by
    length bucket (the chunk keeps the groups full) and each forward batch is yielded, so
    stored in a cache, as soon as it is done: a killed run loses only the batch in flight.
    A chunk's unusable texts come with its first batch."""

    def __init__(self, backbone: TextBackbone, execution: Execution, *, batch_size: int,
                 normalize: bool, on_error: str):
        self.backbone, self.execution = backbone, execution
        self.batch_size, self.normalize, self.on_error = batch_size, normalize, on_error

    def __call__(self, items: Sequence[Any], rows: Sequence[Any]) -> Iterator[EmbeddedBatch]:
        from sktransfer.backbones._runtime import torch_threads

        errors = TEXTS.row_errors(items, rows)
        if errors and self.on_error == "raise":
            raise next(iter(errors.values()))
        chunk = self.batch_size * BATCHES_PER_CHUNK
        width = self.backbone.n_features
        for start in range(0, len(items), chunk):
            span = range(start, min(start + chunk, len(items)))
            failed = {position: errors[position] for position in span if position in errors}
            good = np.asarray([position for position in span if position not in errors],
                              dtype=int)
            if not len(good):
                yield EmbeddedBatch([], np.empty((0, width), dtype=np.float32), failed, [])
                continue
            with torch_threads(self.execution.threads):
                for done, vectors in self.backbone.encode_batches(
                        [items[p] for p in good], batch_size=self.batch_size,
                        normalize=self.normalize, precision=self.execution.precision):
                    yield EmbeddedBatch(good[done].tolist(), vectors, failed,
                                        [None] * len(done))
                    failed = {}


TEXTS = TextModality()
