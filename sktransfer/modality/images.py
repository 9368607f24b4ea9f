"""Images: items from X, content keys, the default timm model, batches through the image
pipeline (:mod:`sktransfer._images`) for frozen and trainable networks."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sktransfer._decode import image_content_key
from sktransfer._images import DecodedImages, Preprocessor, image_batches
from sktransfer._input import image_items
from sktransfer.modality._protocol import EmbeddedBatch, Rows

if TYPE_CHECKING:
    from sktransfer.backbones._contract import ImageBackbone
    from sktransfer.backbones._engines import Execution

IMAGE_SUFFIX = re.compile(r"\.(jpe?g|png|bmp|gif|tiff?|webp)$", re.I)


class ImageModality:
    """Images: file paths, bytes, PIL images or arrays (see
    :func:`sktransfer._input.image_items`)."""

    kind = "image"
    default_model = "tf_efficientnet_lite0.packaged"
    file_suffix = IMAGE_SUFFIX
    # the options of load_backbone, as scikit-learn parameter constraints of the estimators
    # that take them
    backbone_constraints: ClassVar[dict[str, list[Any]]] = {
        "weights": [str],
        "model_args": [None, dict],
        "preprocessing": [None, dict],
        "weights_license": [None, str],
    }

    def items(self, X: Any) -> list[Any]:
        return image_items(X)

    def content_key(self, item: Any, *, read_files: bool) -> bytes | None:
        return image_content_key(item, read_files=read_files)

    def claims(self, values: Any) -> bool:
        """Whether the strings among the first 200 values all end like image files.

        Examples
        --------
        >>> from sktransfer.modality import IMAGES
        >>> IMAGES.claims(["a.jpg", "b.PNG", None]), IMAGES.claims(["a fine film"])
        (True, False)
        """
        strings = [v for v in itertools.islice(values, 200) if isinstance(v, str)]
        return bool(strings) and all(IMAGE_SUFFIX.search(v.strip()) for v in strings)

    def load_backbone(self, model: str, *, device: str = "auto", weights: str = "pretrained",
                      model_args: dict[str, Any] | None = None,
                      preprocessing: dict[str, Any] | None = None,
                      license: str | None = None) -> ImageBackbone:
        """The shared frozen timm backbone (see :class:`~sktransfer.ImageEmbedder` for the
        parameters)."""
        from sktransfer.backbones._runtime import resolve_device
        from sktransfer.backbones.timm import get_timm_backbone

        return get_timm_backbone(model, weights, resolve_device(device), model_args=model_args,
                                 preprocessing=preprocessing, license=license)

    @staticmethod
    def workers(threads: int) -> int:
        """Threads that decode and preprocess images beside a forward pass running on
        ``threads`` threads: as many, and no more than the machine's cores."""
        return max(1, min(threads, os.cpu_count() or 1))

    def decoded_store(self, *, augment: bool) -> DecodedImages:
        """Where a fit keeps each image decoded once (see :class:`DecodedImages`)."""
        return DecodedImages(augment=augment)

    def check_rows(self, items: Sequence[Any], data_config: dict[str, Any] | None = None,
                   decoded: DecodedImages | None = None) -> None:
        """Decode every image once (the first unreadable one raises, naming its row),
        keeping it in ``decoded``."""
        for _ in self.training_batches(items, range(len(items)), batch_size=64, device="cpu",
                                       data_config=data_config, decoded=decoded):
            pass

    def training_batches(self, items: Sequence[Any], order: Rows, *,
                         batch_size: int, device: str, rng: np.random.Generator | None = None,
                         data_config: dict[str, Any] | None = None,
                         decoded: DecodedImages | None = None
                         ) -> Iterator[tuple[list[int], Any]]:
        """Batches from the shared image pipeline: the model's own evaluation transform
        (bit-identical to :class:`~sktransfer.ImageEmbedder`'s input), or with ``rng`` its
        augmented form (random crop of the resized image and horizontal flip); images kept
        in ``decoded`` are not decoded again."""
        from sktransfer.backbones._runtime import resolve_threads, to_device

        if data_config is None:
            raise ValueError("images need the model's data_config to be batched")
        for batch in image_batches(items, range(len(items)), Preprocessor(data_config),
                                   batch_size=batch_size, order=order, rng=rng,
                                   workers=self.workers(resolve_threads(None)),
                                   decoded=decoded):
            yield batch.positions, to_device(batch.pixels, device)

    def encoder(self, backbone: ImageBackbone, execution: Execution, *,
                layers: tuple[int | None, ...], pooling: str, batch_size: int, decode: str,
                on_error: str, keyed: bool) -> ImageEncoder:
        """The frozen forward pass of :class:`~sktransfer.ImageEmbedder`."""
        return ImageEncoder(backbone, execution, layers=layers, pooling=pooling,
                            batch_size=batch_size, decode=decode, on_error=on_error,
                            keyed=keyed)


class ImageEncoder:
    """Images to vectors: decoded (at reduced size where that loses nothing) and
    preprocessed in threads while the engine runs the previous batch; Pillow releases the
    GIL while it decodes and resizes."""

    def __init__(self, backbone: ImageBackbone, execution: Execution, *,
                 layers: tuple[int | None, ...], pooling: str, batch_size: int, decode: str,
                 on_error: str, keyed: bool):
        from sktransfer.backbones._engines import open_engine

        self.engine = open_engine(backbone, execution, layers, pooling, batch_size)
        self.preprocess = Preprocessor(backbone.data_config)
        self.width = sum(backbone.output_dims(layers, pooling))
        self.batch_size, self.decode = batch_size, decode
        self.on_error, self.keyed = on_error, keyed

    @property
    def execution(self) -> Execution:
        execution: Execution = self.engine.execution  # an export may have fallen back
        return execution

    def __call__(self, items: Sequence[Any], rows: Sequence[Any]) -> Iterator[EmbeddedBatch]:
        for batch in image_batches(items, rows, self.preprocess, batch_size=self.batch_size,
                                   decode=self.decode,
                                   workers=IMAGES.workers(self.execution.threads),
                                   on_error=self.on_error, keyed=self.keyed):
            vectors = (self.engine(batch.pixels) if batch.pixels is not None
                       else np.empty((0, self.width), dtype=np.float32))
            yield EmbeddedBatch(batch.positions, vectors, batch.errors, batch.keys)


IMAGES = ImageModality()
