"""Decoding one image item (path, bytes, PIL image, array) into 8-bit RGB, and content keys.

Decoding serves the image pipeline (:mod:`sktransfer._images`) and the pixel baselines of the
diagnostics; content keys serve the embedders' cache lookups; ``check_image_file`` serves the
command line's check of every file before any work. Every problem with one item is raised as
:class:`RowProblem`, and its caller names the row.
"""

from __future__ import annotations

import io
import math
import os
import stat
import threading
import time
from typing import Any

import numpy as np

from sktransfer.cache import content_digest

EIGHT_BIT_MAX = 255
_SIXTEEN_TO_EIGHT = 257.0  # 65535 / 255
_BACKGROUND = (255, 255, 255)  # transparent pixels are composited over white


DEFAULT_MAX_FILE_BYTES = 256 * 2**20
_CHUNK = 2**20  # bytes hashed at a time


class RowProblem(Exception):
    """What is wrong with one item; the caller adds the row number."""


def max_file_bytes() -> int:
    """The largest image file read, in bytes: ``SKTRANSFER_MAX_FILE_BYTES`` or 256 MiB.

    Checked before a file is read, so a huge or endless input (``/dev/zero``, a sparse file)
    is refused as a row error instead of filling memory.
    """
    value = os.environ.get("SKTRANSFER_MAX_FILE_BYTES")
    return int(value) if value else DEFAULT_MAX_FILE_BYTES


def _open_image_file(item: str | os.PathLike) -> Any:
    """An open binary handle on a regular image file, checked before any read.

    FIFOs, sockets and devices are refused without blocking (the file is opened
    non-blocking and checked with ``fstat``, so one swapped in after a ``stat`` is caught).
    """
    text = os.fspath(item)
    if isinstance(text, str) and text.startswith(("http://", "https://")):
        raise RowProblem(f"{text!r} is a URL; sktransfer reads local files only, download it first")
    try:
        descriptor = os.open(text, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise RowProblem(f"file not found: {text}") from None
    except IsADirectoryError:
        raise RowProblem(f"{text} is a directory, not an image file") from None
    except PermissionError:
        raise RowProblem(f"permission denied: {text}") from None
    except (OSError, ValueError) as error:
        raise RowProblem(f"cannot read {text}: {getattr(error, 'strerror', None) or error}"
                         ) from None
    info = os.fstat(descriptor)
    problem = None
    if stat.S_ISDIR(info.st_mode):
        problem = f"{text} is a directory, not an image file"
    elif not stat.S_ISREG(info.st_mode):
        problem = f"{text} is not a regular file (a FIFO, socket or device), not an image file"
    elif info.st_size == 0:
        problem = f"{text} is empty (0 bytes)"
    elif info.st_size > max_file_bytes():
        problem = (f"{text} is {info.st_size:,} bytes, over the limit of {max_file_bytes():,} "
                   "for one image file (SKTRANSFER_MAX_FILE_BYTES raises it)")
    if problem:
        os.close(descriptor)
        raise RowProblem(problem)
    return os.fdopen(descriptor, "rb")


def check_image_file(item: str | os.PathLike) -> None:
    """Raise :class:`RowProblem` when ``item`` is not a readable image file within the size
    limit, or its header is not one of an image format Pillow reads (only the header is
    read: damage further in, such as truncation, shows when the image is decoded)."""
    with _open_image_file(item) as handle:
        _decode(handle, os.fspath(item), load=False)


def read_image_file(item: str | os.PathLike) -> bytes:
    """The bytes of an image file, read once, after the checks of :func:`_open_image_file`."""
    limit = max_file_bytes()
    with _open_image_file(item) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise RowProblem(f"cannot read {os.fspath(item)}: {error.strerror or error}"
                             ) from None
    if len(data) > limit:
        raise RowProblem(f"{os.fspath(item)} grew past the limit of {limit:,} bytes while it "
                         "was read")
    if not data:
        raise RowProblem(f"{os.fspath(item)} is empty (0 bytes)")
    return data


def image_content_key(item: Any, *, read_files: bool = True) -> bytes | None:
    """A digest of what an image item holds, or None when it cannot be read.

    A file and its bytes share a key, so renamed or moved files still hit a cache. PIL images
    are keyed by pixels plus what changes their meaning (mode, palette, transparency, EXIF
    orientation); arrays by dtype, shape and bytes. With ``read_files=False`` a file is keyed
    by its resolved path instead, which spares reading it twice when no cache needs content.
    """
    from PIL import Image

    if isinstance(item, (bytes, bytearray, memoryview)):
        return content_digest(b"encoded:", item)
    if isinstance(item, (str, os.PathLike)) and not read_files:
        try:
            return content_digest(b"path:", os.fsencode(os.path.realpath(item)))
        except (OSError, ValueError):  # a NUL byte, an unencodable name: decoding says so
            return None
    if isinstance(item, (str, os.PathLike)):
        return _FILE_DIGESTS.get(item)
    if isinstance(item, np.ndarray) and item.dtype != object:
        header = f"array:{item.dtype.str}:{item.shape}:".encode()
        return content_digest(header, np.ascontiguousarray(item).data)
    if isinstance(item, Image.Image):
        try:
            orientation = item.getexif().get(0x0112)
            header = (f"pil:{item.mode}:{item.size}:{orientation}:"
                      f"{item.info.get('transparency')!r}:").encode()
            return content_digest(header, bytes(item.getpalette() or ()), item.tobytes())
        except (OSError, SyntaxError, ValueError):
            return None  # unreadable: decoding names the row
    return None


class _FileDigests:
    """Content digests of files, remembered while the file provably has not changed.

    A grid search hashes the same files twice per fit; reading them again is most of what a
    cached transform costs. A digest is reused only while the file's device, inode, size,
    mtime and ctime are all unchanged (ctime cannot be set back from user space, so a rewrite
    that restores the mtime is still seen), and only for files whose last change was more than
    ``settled_ns`` before they were read: a file changed twice within one timestamp tick would
    otherwise keep its stamp (git's "racy" entries; 2 s covers FAT's coarse clock).
    """

    settled_ns = 2_000_000_000
    capacity = 200_000

    def __init__(self) -> None:
        self.digests: dict[tuple[int, ...], bytes] = {}
        self.lock = threading.Lock()

    @staticmethod
    def stamp(path: Any) -> tuple[int, ...]:
        info = os.stat(path)
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def get(self, path: Any) -> bytes | None:
        """The digest of the file's bytes (as for the same bytes passed directly), or None
        when it is not a readable regular file within the size limit (decoding then says
        why). The file is hashed in chunks: memory does not grow with its size."""
        try:
            before = self.stamp(path)
            known = self.digests.get(before)
            if known is not None:
                return known
            started = time.time_ns()
            digest = _hash_file(path)
            after = self.stamp(path)
        except (OSError, ValueError, RowProblem):
            return None
        if after == before and max(before[3], before[4]) < started - self.settled_ns:
            with self.lock:
                if len(self.digests) >= self.capacity:
                    self.digests.clear()
                self.digests[before] = digest
        return digest


_FILE_DIGESTS = _FileDigests()


def _hash_file(path: Any) -> bytes:
    import blake3

    digest, total, limit = blake3.blake3(b"encoded:"), 0, max_file_bytes()
    with _open_image_file(path) as handle:
        while chunk := handle.read(_CHUNK):
            total += len(chunk)
            if total > limit:
                raise RowProblem("grew past the size limit while it was hashed")
            digest.update(chunk)
    return digest.digest(16)


def load_image_keyed(item: Any, *, draft: tuple[int, int] | None = None
                     ) -> tuple[Any, bytes | None]:
    """:func:`load_image`, plus for a file the content key of the very bytes decoded.

    A cache must store a file's vector under the key of what was decoded, not of what was
    hashed earlier: the file may have been replaced in between.
    """
    if isinstance(item, (str, os.PathLike)):
        data = read_image_file(item)
        return _decode(io.BytesIO(data), os.fspath(item), draft), content_digest(b"encoded:",
                                                                                 data)
    return load_image(item, draft=draft), None


def load_image(item: Any, *, draft: tuple[int, int] | None = None) -> Any:
    """Decode one item (path, bytes, PIL image or array) into an RGB PIL image.

    ``draft``: the smallest (width, height) the caller needs. JPEG files are then decoded
    directly at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's ``draft``) as long as
    both sides stay at least that large: several times faster, and the full-size image is
    never held in memory.
    """
    from PIL import Image

    if isinstance(item, Image.Image):
        try:
            return _to_rgb(item)
        except (OSError, SyntaxError, ValueError) as error:
            raise RowProblem(f"this PIL image cannot be read ({error}): it is closed, or was "
                             "opened lazily from a file that is truncated or gone") from None
    if isinstance(item, np.ndarray):
        return _to_rgb(array_to_image(item))
    if isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise RowProblem("empty bytes (0 bytes), not an image")
        return _decode(io.BytesIO(bytes(item)), "bytes", draft)
    if isinstance(item, (str, os.PathLike)):
        return _decode(io.BytesIO(read_image_file(item)), os.fspath(item), draft)
    if item is None or (isinstance(item, float) and math.isnan(item)):
        raise RowProblem("missing image (None/NaN)")
    raise RowProblem(
        f"unsupported type {type(item).__name__}; expected a file path, bytes, a PIL image or "
        "a numpy array"
    )


def _decode(source: Any, name: str, draft: tuple[int, int] | None = None, *,
            load: bool = True) -> Any:
    """The RGB image in ``source``; with ``load=False`` only its header is read and checked
    (and None returned)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            _check_pixels(image, name)
            if not load:
                return None
            if draft is not None and image.format == "JPEG":
                # EXIF rotation may swap the sides: both must stay large enough either way.
                side = max(draft)
                image.draft(image.mode, (side, side))
            image.load()
            return _to_rgb(image)
    except Image.DecompressionBombError as error:
        raise RowProblem(f"{name}: refused by Pillow's decompression-bomb guard ({error})"
                         ) from None
    except UnidentifiedImageError:
        if _is_heif(source):
            raise RowProblem(f"{name} is a HEIC/HEIF image, which Pillow reads only with a "
                             "plugin: pip install pillow-heif, then call "
                             "pillow_heif.register_heif_opener() before embedding") from None
        raise RowProblem(f"{name} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise RowProblem(f"{name} cannot be decoded (truncated or corrupt: {error})") from None


_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")


def _is_heif(source: Any) -> bool:
    """Whether the bytes start like an ISO-BMFF HEIF container (``....ftypheic``)."""
    try:
        source.seek(0)
        head = source.read(12)
    except (OSError, ValueError):
        return False
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _check_pixels(image: Any, name: str) -> None:
    """Refuse, before decoding, an image larger than Pillow's warning limit."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit and width * height > limit:
        raise RowProblem(f"{name} is {width}×{height} = {width * height:,} pixels, over the "
                         f"limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS; raise it to accept "
                         "larger images, at the cost of their memory)")


def array_to_image(array: np.ndarray) -> Any:
    """An H×W, H×W×1, H×W×3 or H×W×4 array as a PIL image, with its values checked.

    uint8 is taken as is, uint16 is scaled from 0..65535, other integers must lie in 0..255,
    floats in [0, 1], booleans map to 0 and 255.
    """
    from PIL import Image

    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        hint = (" (channels-first? transpose it to H×W×C)"
                if array.ndim == 3 and array.shape[0] in (1, 3, 4) else "")
        raise RowProblem(f"array of shape {array.shape} is not an image: expected H×W (grey), "
                         f"H×W×3 (RGB) or H×W×4 (RGBA){hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise RowProblem(f"array of shape {array.shape} has no pixels")
    # uint8 H×W, H×W×3 and H×W×4 arrays become L, RGB and RGBA images.
    return Image.fromarray(np.ascontiguousarray(_to_uint8(array)))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        return array
    if kind == "b":
        return array.astype(np.uint8) * EIGHT_BIT_MAX
    if array.dtype == np.uint16:
        return np.rint(array / _SIXTEEN_TO_EIGHT).astype(np.uint8)
    if kind in "iu":
        low, high = array.min(), array.max()
        if low < 0 or high > EIGHT_BIT_MAX:
            raise RowProblem(f"integer pixel values must lie in 0..255, found {low}..{high} "
                             "(16-bit images: pass them as uint16)")
        return array.astype(np.uint8)
    if kind == "f":
        if not np.isfinite(array).all():
            raise RowProblem("array contains NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise RowProblem(f"float pixel values must lie in [0, 1], found {low:g}..{high:g}; "
                             "scale them first (e.g. divide by 255)")
        return np.rint(array * EIGHT_BIT_MAX).astype(np.uint8)
    raise RowProblem(f"arrays of dtype {array.dtype} are not images")


def _to_rgb(image: Any) -> Any:
    """Apply EXIF orientation and convert any Pillow mode to 8-bit RGB."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "I":  # 32-bit integers: the rule of integer arrays (0..255, else an error)
        return array_to_image(np.asarray(image)).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(image).astype(np.float64)
        grey = np.clip(np.rint(grey / _SIXTEEN_TO_EIGHT), 0, EIGHT_BIT_MAX).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        return array_to_image(np.asarray(image)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or image.mode == "RGBA":
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
