"""THE image pipeline: preprocessing and batching, on top of :mod:`sktransfer._decode`.

:func:`image_batches` is the one way images are read: every estimator that looks at pixels
(:class:`~sktransfer.ImageEmbedder`, the fine-tuning classifiers, the diagnostics baselines)
goes through it, so for the same model and image they all see the same pixels. Every problem
with one item is raised as :class:`RowProblem` and turned into an :class:`InputError` naming
the row in :func:`decoded_batches`, the one place that does so.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from sktransfer._decode import EIGHT_BIT_MAX, RowProblem, load_image, load_image_keyed
from sktransfer.exceptions import InputError

logger = logging.getLogger("sktransfer")

_MARGIN = 4  # output pixels: covers the support of every Pillow filter (lanczos: 3)
_MAX_RESIZED_PIXELS = 2**22  # beyond this a resize is boxed on both axes (12 MiB as RGB)
_PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
INTERPOLATIONS = tuple(_PIL_FILTERS)  # what ``interpolation`` in a data config may be
DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
_CROP_MODES = ("center", "squash", "border")
# The largest side a network input (and the resize before its crop) may have. The largest
# timm pretrained configs are 1,024 px (SAM); a 4,096 px input already takes 200 MB as float32
# per image before the first layer multiplies it. Beyond this, one image would exhaust memory.
MAX_INPUT_SIDE = 4096
# bytes of decoded images a fine-tuning fit keeps (DecodedImages): 500 ELPV cells at 224 px
# take 75 MB, with augmentation's 256 px resized images 173 MB
DECODED_BUDGET = 1 << 30


def check_preprocessing(preprocessing: dict[str, Any] | None) -> None:
    """Raise a ValueError for a ``preprocessing=`` key or value the pipeline cannot honour."""
    for key, value in (preprocessing or {}).items():
        if key not in DATA_CONFIG_KEYS:
            raise ValueError(f"preprocessing key {key!r} is not one of "
                             f"{', '.join(DATA_CONFIG_KEYS)}")
        if key == "interpolation" and value not in INTERPOLATIONS:
            raise ValueError(f"preprocessing interpolation={value!r} is not one of "
                             f"{', '.join(INTERPOLATIONS)}")
        if key == "crop_mode" and value not in _CROP_MODES:
            raise ValueError(f"preprocessing crop_mode={value!r} is not one of "
                             f"{', '.join(_CROP_MODES)}")
        if key in ("mean", "std") and (
                np.ndim(value) != 1 or len(value) != 3
                or not all(isinstance(v, Real) for v in value)
                or (key == "std" and min(value) <= 0)):
            raise ValueError(f"preprocessing {key} must be 3 numbers (RGB), got {value!r}")
        if key == "crop_pct" and not (isinstance(value, Real) and 0 < float(value) <= 1):
            raise ValueError(f"preprocessing crop_pct must be in (0, 1], got {value!r}")
        if key == "input_size" and not (
                np.ndim(value) == 1 and len(value) in (2, 3)
                and all(isinstance(v, Integral) and int(v) > 0 for v in value)):
            raise ValueError(f"preprocessing input_size must be (height, width) or "
                             f"(3, height, width) in pixels, got {value!r}")
        if key == "input_size" and max(value[-2:]) > MAX_INPUT_SIDE:
            raise ValueError(f"preprocessing input_size={tuple(value)!r} is larger than "
                             f"{MAX_INPUT_SIDE} px per side, which would exhaust memory "
                             "(a network's input is float32 for every image of a batch)")


def check_input_size(data_config: dict[str, Any], source: str) -> None:
    """Refuse a data config whose input, or resize before the crop, is larger than
    ``MAX_INPUT_SIDE`` px per side; ``source`` names the setting that made it so."""
    height, width = (int(v) for v in data_config["input_size"][-2:])
    crop_pct = data_config.get("crop_pct") or 0.875
    resized = math.floor(max(height, width) / crop_pct)
    if max(height, width) > MAX_INPUT_SIDE or resized > 2 * MAX_INPUT_SIDE:
        raise ValueError(f"{source} gives input_size=(3, {height}, {width}) with crop_pct="
                         f"{crop_pct} (a {resized} px resize): more than {MAX_INPUT_SIDE} px "
                         "per side would exhaust memory; choose a smaller input_size or a "
                         "larger crop_pct")



class Preprocessor:
    """timm's evaluation transform for a model's data config, done with Pillow and numpy.

    Matches ``timm.data.create_transform(**data_config)`` (resize the shorter side to
    ``size / crop_pct``, centre crop, scale to [0, 1], normalise) for the ``center`` and
    ``squash`` crop modes; other modes use timm's own transform.
    """

    def __init__(self, data_config: dict[str, Any]):
        self.data_config = data_config
        self.height, self.width = (int(v) for v in data_config["input_size"][1:])
        crop_pct = data_config.get("crop_pct") or 0.875
        self.scale = (math.floor(self.height / crop_pct), math.floor(self.width / crop_pct))
        self.crop_mode = data_config.get("crop_mode") or "center"
        self.resample = _PIL_FILTERS.get(data_config.get("interpolation") or "bilinear", 2)
        self.mean = np.asarray(data_config["mean"], dtype=np.float32).reshape(1, 1, 3)
        self.std = np.asarray(data_config["std"], dtype=np.float32).reshape(1, 1, 3)
        self._fallback = None
        # The smallest decoded size that loses nothing: the resize target (both sides, since
        # the shorter one becomes scale[0]).
        self.draft_size: tuple[int, int] | None = (max(self.scale), max(self.scale))
        if not (self.crop_mode == "squash"
                or (self.crop_mode == "center" and self.scale[0] == self.scale[1])):
            from timm.data import create_transform

            self._fallback = create_transform(**data_config)
            self.draft_size = None

    def __call__(self, image: Any) -> np.ndarray:
        """An RGB PIL image as a normalised float32 (3, H, W) array."""
        return self.normalize(self.crop(image)[None])[0].numpy()

    def crop(self, image: Any, augment: Augment | None = None) -> np.ndarray:
        """The resized, centre-cropped image as a uint8 (H, W, 3) array (before normalising).

        With ``augment`` (training): the same resize, then a crop at a random position of the
        resized image and an optional horizontal flip, so training sees the pixels evaluation
        sees, shifted. With a fallback transform (other crop modes), the normalised float
        (3, H, W) array.
        """
        if augment is not None:
            return self._augmented(image, augment)
        if self._fallback is not None:
            return self._fallback(image).numpy()
        if self.crop_mode == "squash":
            image = image.resize((self.scale[1], self.scale[0]), self.resample)
            return self._centre(image)
        new_w, new_h = self._resized_size(image)
        if (new_w, new_h) == image.size:
            return self._centre(image)
        top = round((new_h - self.height) / 2.0)
        left = round((new_w - self.width) / 2.0)
        if top < 0 or left < 0:  # the crop is larger than the resized image: timm pads
            return self._centre(image.resize((new_w, new_h), self.resample))
        return self._region(image, (new_w, new_h), left, top, box_columns=True)

    def _resized_size(self, image: Any) -> tuple[int, int]:
        """(width, height) with the shorter side resized to ``scale`` (timm's Resize)."""
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.scale[0] * long / short)
        return (self.scale[0], new_long) if width <= height else (new_long, self.scale[0])

    def _region(self, image: Any, size: tuple[int, int], left: int, top: int, *,
                box_columns: bool) -> np.ndarray:
        """The (height, width) crop at (left, top) of ``image`` resized to ``size``.

        With ``box_columns``, only the columns that survive the crop are resampled (most
        photos are landscape, so that is where the work is): Pillow's resize(box=...) then
        samples the same positions as a full resize. A margin of _MARGIN output pixels keeps
        the filter's support inside the box (Pillow clamps it to the box). Rows are boxed only
        when the resized image would exceed ``_MAX_RESIZED_PIXELS`` (an image tens of times
        taller than wide): Pillow's vertical box offset moves samples (measured: up to 19
        levels on noise), its horizontal one does not (at most one level in a few pixels), so
        that case trades exactness for memory bounded by the crop.
        """
        new_w, new_h = size
        width, height = image.size
        x0, x1 = 0, new_w
        if box_columns:
            x0 = left - min(_MARGIN, left)
            x1 = left + self.width + min(_MARGIN, new_w - left - self.width)
        y0, y1 = 0, new_h
        if (x1 - x0) * new_h > _MAX_RESIZED_PIXELS:
            y0 = top - min(_MARGIN, top)
            y1 = top + self.height + min(_MARGIN, new_h - top - self.height)
        if (x0, x1, y0, y1) == (0, new_w, 0, new_h) and not box_columns:
            resized = image.resize(size, self.resample)
        else:
            sx, sy = width / new_w, height / new_h
            box = (x0 * sx, 0.0 if y0 == 0 else y0 * sy, x1 * sx,
                   float(height) if y1 == new_h else y1 * sy)
            resized = image.resize((x1 - x0, y1 - y0), self.resample, box=box)
        region = resized.crop((left - x0, top - y0, left - x0 + self.width,
                               top - y0 + self.height))
        return np.asarray(region, dtype=np.uint8)

    def _augmented(self, image: Any, augment: Augment) -> np.ndarray:
        if self._fallback is not None:
            pixels = self._fallback(image).numpy()
            return pixels[:, :, ::-1].copy() if augment.flip else pixels
        source = self.augment_source(image)
        if source is not None:
            return self.crop_source(source, augment)
        new_w, new_h = self._augment_size(image)  # too big to resize whole: boxed to the crop
        top, left = self._offsets(new_h, new_w, augment)
        pixels = self._region(image, (new_w, new_h), left, top, box_columns=True)
        return np.ascontiguousarray(pixels[:, ::-1]) if augment.flip else pixels

    def _augment_size(self, image: Any) -> tuple[int, int]:
        return ((self.scale[1], self.scale[0]) if self.crop_mode == "squash"
                else self._resized_size(image))

    def _offsets(self, new_h: int, new_w: int, augment: Augment) -> tuple[int, int]:
        return (math.floor(augment.top * (max(new_h - self.height, 0) + 1)),
                math.floor(augment.left * (max(new_w - self.width, 0) + 1)))

    def augment_source(self, image: Any) -> np.ndarray | None:
        """What augmented crops of ``image`` are cut from: the image resized as for
        evaluation, uint8 (H, W, 3), to keep across epochs; None with a fallback transform
        or a resize beyond ``_MAX_RESIZED_PIXELS`` (its crops are resampled each time)."""
        if self._fallback is not None:
            return None
        new_w, new_h = self._augment_size(image)
        if new_w * new_h > _MAX_RESIZED_PIXELS:
            return None
        return np.asarray(image.resize((new_w, new_h), self.resample), dtype=np.uint8)

    def crop_source(self, source: np.ndarray, augment: Augment) -> np.ndarray:
        """The random crop ``augment`` of an :meth:`augment_source`, flipped as it says."""
        top, left = self._offsets(source.shape[0], source.shape[1], augment)
        pixels = source[top:top + self.height, left:left + self.width]
        return np.ascontiguousarray(pixels[:, ::-1] if augment.flip else pixels)

    def _centre(self, image: Any) -> np.ndarray:
        width, height = image.size
        top = round((height - self.height) / 2.0)
        left = round((width - self.width) / 2.0)
        image = image.crop((left, top, left + self.width, top + self.height))
        return np.asarray(image, dtype=np.uint8)

    def normalize(self, batch: np.ndarray) -> Any:
        """Stacked crops (N, H, W, 3) uint8 as a normalised float32 torch tensor (N, 3, H, W).

        One vectorised, multi-threaded pass per batch; the result is channels_last in memory,
        the layout convolutions want. Float batches from a fallback transform are already
        normalised and pass through.
        """
        import torch

        if batch.dtype != np.uint8:
            return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if not batch.flags.writeable:  # np.asarray of a PIL image is read-only
            batch = batch.copy()
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        # The same float32 operations, in the same order, as (x / 255 - mean) / std in numpy.
        pixels.div_(float(EIGHT_BIT_MAX))
        mean, std = (torch.from_numpy(v.reshape(1, 3, 1, 1)) for v in (self.mean, self.std))
        return pixels.sub_(mean).div_(std)


class DecodedImages:
    """The images of one fine-tuning fit, each decoded once: its evaluation crop (uint8, as
    :meth:`Preprocessor.crop` gives it) and, when the fit augments, the resized image its
    random crops are cut from (:meth:`Preprocessor.augment_source`). Every later pass
    (the frozen features, validation, each epoch's crops) reads them from here. Kept up to
    ``budget`` bytes (default ``DECODED_BUDGET``); beyond it an image is decoded again when
    needed, and one log line says so. Filled from the decode threads."""

    def __init__(self, *, augment: bool = False, budget: int | None = None):
        self.augment = augment
        self.budget = DECODED_BUDGET if budget is None else budget
        self.crops: dict[int, np.ndarray] = {}
        self.sources: dict[int, np.ndarray] = {}
        self.used = 0
        self._full = False
        self._lock = threading.Lock()

    def kept(self, position: int, augment: Augment | None,
             preprocess: Preprocessor) -> np.ndarray | None:
        """The crop of ``position`` (augmented as ``augment`` says) from what is kept, or
        None when it was not kept."""
        if augment is None:
            return self.crops.get(position)
        source = self.sources.get(position)
        return None if source is None else preprocess.crop_source(source, augment)

    def keep(self, position: int, image: Any, preprocess: Preprocessor) -> None:
        """Keep ``image``'s evaluation crop and (augmenting) its resized image (nothing
        once the budget has run out: an image beyond it costs no extra resize)."""
        if self._full:
            return
        crop = preprocess.crop(image)
        arrays = [(self.crops, crop)] if crop.dtype == np.uint8 else []
        if self.augment:
            source = preprocess.augment_source(image)
            if source is not None:
                arrays.append((self.sources, source))
        with self._lock:
            for store, array in arrays:
                if self.used + array.nbytes > self.budget:
                    if not self._full:
                        logger.info("fine-tuning: decoded images beyond the %.2f GB set aside "
                                    "are decoded again when needed", self.budget / 1e9)
                        self._full = True
                    return
                store[position] = array
                self.used += array.nbytes


@dataclass(frozen=True)
class Augment:
    """One image's random augmentation: crop position (fractions of the free range) and flip.

    Drawn in the caller's thread from a seeded generator (:meth:`draw`), so results do not
    depend on which decode thread ran first.
    """

    top: float
    left: float
    flip: bool

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Augment:
        top, left, flip = rng.random(3)
        return cls(float(top), float(left), bool(flip < 0.5))


@dataclass
class Batch:
    """One batch from :func:`image_batches`.

    ``positions``: the positions (in the items given) of the rows of ``pixels``;
    ``pixels``: their normalised float32 tensor (n, 3, H, W), or None when every row failed;
    ``errors``: position -> error, for the items of this batch that could not be read
    (under ``on_error`` other than ``"raise"``); ``keys``: for each of ``positions``, the
    content key of the bytes decoded when the item is a file and ``keyed`` was asked for
    (None otherwise).
    """

    positions: list[int]
    pixels: Any
    errors: dict[int, InputError]
    keys: list[bytes | None]


PREFETCH = 2  # batches in preparation at once, the one being waited for included


def decoded_batches(work: Callable[[int], Any], rows: Sequence[Any],
                    order: Sequence[int] | np.ndarray, *,
                    batch_size: int, workers: int, on_error: str
                    ) -> Iterator[tuple[list[int], list[Any], dict[int, InputError]]]:
    """Run ``work(position)`` for every position of ``order`` in background threads.

    Yields, batch by batch in ``order``: the positions that worked, their results, and for
    each position that raised :class:`RowProblem` an :class:`InputError` naming
    ``rows[position]``.
    At most ``PREFETCH`` batches are in preparation at once, so memory stays bounded
    whatever the input's length. With ``on_error="raise"`` the first failing row of a batch
    raises, after the batches before it were yielded (so their work is kept).
    """
    def attempt(position: int) -> Any:
        try:
            return work(position)
        except RowProblem as problem:
            return InputError(rows[position], str(problem))

    starts = iter(range(0, len(order), batch_size))
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="sktransfer-decode") as pool:
        pending: deque[tuple[list[int], list[Any]]] = deque()

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                chunk = list(order[start:start + batch_size])
                pending.append((chunk, [pool.submit(attempt, p) for p in chunk]))

        for _ in range(PREFETCH):
            submit_next()
        while pending:
            chunk, futures = pending.popleft()
            results = dict(zip(chunk, (future.result() for future in futures), strict=True))
            submit_next()  # now: while this batch is consumed, the next ones are prepared
            errors = {p: r for p, r in results.items() if isinstance(r, InputError)}
            if errors and on_error == "raise":
                for _, waiting in pending:
                    for future in waiting:
                        future.cancel()
                raise next(iter(errors.values()))
            good = [p for p in chunk if p not in errors]
            yield good, [results[p] for p in good], errors


def image_batches(items: Sequence[Any], rows: Sequence[Any], preprocess: Preprocessor, *,
                  batch_size: int, decode: str = "reduced", workers: int = 1,
                  on_error: str = "raise", order: Sequence[int] | np.ndarray | None = None,
                  rng: np.random.Generator | None = None, keyed: bool = False,
                  decoded: DecodedImages | None = None) -> Iterator[Batch]:
    """Decode and preprocess images a batch at a time, in background threads.

    Parameters
    ----------
    items : the images (paths, bytes, PIL images, arrays).
    rows : how errors name each item (usually its row in the user's input).
    preprocess : the model's :class:`Preprocessor`.
    batch_size, workers : images per batch, decode threads.
    decode : {"reduced", "full"}
        ``"reduced"`` lets JPEG files decode at reduced scale when that loses nothing for
        ``preprocess`` (see :meth:`Preprocessor.draft_size`).
    on_error : {"raise", "zeros", "nan"}
        ``"raise"`` raises the first bad row; otherwise bad rows are reported in
        :attr:`Batch.errors` and left out of the batch.
    order : positions to read, in this order (default: all, in order).
    rng : a generator for training-time augmentation (random crops and flips); None for the
        evaluation transform.
    keyed : bool
        Fill :attr:`Batch.keys` with the content key of each file's decoded bytes (what a
        cache stores under); without it files are not hashed and the keys are None.
    decoded : a fit's :class:`DecodedImages`: images are read from it when kept there, and
        kept there when decoded (not with ``keyed``).

    Examples
    --------
    >>> import numpy as np
    >>> prep = Preprocessor({"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3,
    ...                      "crop_pct": 1.0, "interpolation": "bilinear"})
    >>> images = [np.zeros((16, 16), dtype=np.uint8), "missing.png"]
    >>> [(b.positions, tuple(b.pixels.shape), [str(e) for e in b.errors.values()])
    ...  for b in image_batches(images, [0, 1], prep, batch_size=2, on_error="nan")]
    [([0], (1, 3, 8, 8), ['row 1: file not found: missing.png'])]
    """
    order = range(len(items)) if order is None else order
    draft = preprocess.draft_size if decode == "reduced" else None
    augments = ({position: Augment.draw(rng) for position in order}
                if rng is not None else {})

    keeping = decoded if not keyed else None  # a cache's keys need the file read

    def work(position: int) -> tuple[np.ndarray, bytes | None]:
        augment = augments.get(position)
        if keeping is not None:
            kept = keeping.kept(position, augment, preprocess)
            if kept is not None:
                return kept, None
        image, key = (load_image_keyed(items[position], draft=draft) if keyed
                      else (load_image(items[position], draft=draft), None))
        if keeping is not None:
            keeping.keep(position, image, preprocess)
            kept = keeping.kept(position, augment, preprocess)
            if kept is not None:
                return kept, key
        return preprocess.crop(image, augment), key

    for positions, results, errors in decoded_batches(work, rows, order, batch_size=batch_size,
                                                      workers=workers, on_error=on_error):
        pixels = preprocess.normalize(np.stack([crop for crop, _ in results])) if results \
            else None
        yield Batch(positions, pixels, errors, [key for _, key in results])
