"""What every backbone family shares: the per-process cache, devices, precision, digests."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sktransfer.backbones._contract import Backbone

logger = logging.getLogger("sktransfer")

T = TypeVar("T")

_LOADED: dict[Hashable, Any] = {}
_LOCK = threading.Lock()
_PRECISION_LOCK = threading.Lock()


def load_once(key: Hashable, load: Callable[[], T]) -> T:
    """Return the backbone for ``key``, calling ``load`` only the first time in this process.

    Clones, unpickled copies and grid-search candidates with the same identity share one copy.
    """
    backbone: T | None = _LOADED.get(key)
    if backbone is not None:
        return backbone
    with _LOCK:
        backbone = _LOADED.get(key)
        if backbone is None:
            start = time.perf_counter()
            backbone = load()
            logger.info("loaded backbone %s in %.2f s", key, time.perf_counter() - start)
            _LOADED[key] = backbone
    return backbone


def clear_loaded() -> None:
    """Forget every loaded backbone (frees their memory once no estimator uses them)."""
    with _LOCK:
        _LOADED.clear()


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device={device!r} is not a torch device ({error})") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA device is available")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """The precision ``precision`` means on ``device``.

    ``"auto"`` is bfloat16 on CUDA devices that support it and on CPUs with native bfloat16
    instructions (:func:`native_bfloat16`), float32 everywhere else.
    """
    import torch

    if precision != "auto":
        if precision == "float16" and not device.startswith("cuda"):
            raise ValueError("precision='float16' needs a CUDA device; use 'bfloat16' on CPU")
        return precision
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if native_bfloat16() else "float32"


PRECISIONS = ("auto", "float32", "bfloat16", "float16")  # what precision= may be


def model_precision(backbone: Backbone, precision: str, device: str) -> str:
    """What ``precision`` means for this model on ``device``: :func:`resolve_precision`,
    then :func:`faithful_precision` (the embedders and fine-tuning decide alike)."""
    return faithful_precision(backbone, precision, resolve_precision(precision, device))


# precision="auto" keeps a reduced precision for a model only while its outputs on a fixed
# probe stay this close to float32 (the smallest cosine over the probe): the README's promise.
# Text keeps 0.9999 (MiniLM in bfloat16: 0.99995); images 0.999 (EfficientNet-Lite0: 0.9991,
# ResNet, ConvNeXt and ViT: 0.99999).
MIN_PRECISION_COSINE = {"text": 0.9999, "image": 0.999}


def faithful_precision(backbone: Backbone, precision: str, resolved: str) -> str:
    """``resolved``, or float32 when ``precision="auto"`` chose a reduced precision that
    this model does not compute faithfully.

    The model's fidelity is measured once per loaded model, on a fixed probe
    (``backbone.precision_cosine``), never on the caller's data: a vector must not depend on
    which rows came first. A precision asked for by name is kept as asked.
    """
    if precision != "auto" or resolved == "float32":
        return resolved
    threshold = MIN_PRECISION_COSINE[backbone.modality]
    with _PRECISION_LOCK:
        cosine = backbone.precision_checks.get(resolved)
        if cosine is None:
            cosine = backbone.precision_checks[resolved] = float(
                backbone.precision_cosine(resolved))
            if not cosine >= threshold:  # NaN included
                logger.info("%s: %s outputs reach a cosine of %.5f to float32 on the probe, "
                            "below %g: precision='auto' runs float32 instead", backbone.name,
                            resolved, cosine, threshold)
    return resolved if cosine >= threshold else "float32"


def min_cosine(reference: Any, got: Any) -> float:
    """The smallest cosine between matching rows of two (n, d) arrays."""
    import numpy as np

    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1)
    return float(np.min(np.sum(reference * got, axis=1) / np.maximum(norms, 1e-12)))


_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86: /proc/cpuinfo flags
_ARM_BF16_FEATURES = ("bf16",)  # aarch64: /proc/cpuinfo Features


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX on x86, BF16 on Arm).

    Without it, bfloat16 is emulated and slower than float32, so ``precision="auto"`` stays
    float32. ``SKTRANSFER_NATIVE_BF16=0`` or ``=1`` overrides the detection.
    """
    forced = os.environ.get("SKTRANSFER_NATIVE_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_flags_say_bf16()


@functools.cache
def _cpu_flags_say_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            words = set()
            for line in handle:
                if line.startswith(("flags", "Features")):
                    words.update(line.split(":", 1)[1].split())
                    break
    except OSError:  # not Linux: no reliable way to tell; float32 is the safe choice
        return False
    wanted = _ARM_BF16_FEATURES if platform.machine().lower() in ("aarch64", "arm64") \
        else _BF16_FLAGS
    return any(flag in words for flag in wanted)


def resolve_threads(n_threads: int | None) -> int:
    """The number of threads a forward pass uses: ``n_threads``, or torch's current setting.

    torch's setting honours ``OMP_NUM_THREADS``, which joblib sets in its worker processes to
    ``cores // n_jobs``, so ``n_jobs`` never oversubscribes the cores.
    """
    import torch

    return int(n_threads) if n_threads else torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run torch with ``n_threads`` threads inside the block; the caller's setting comes back."""
    import torch

    before = torch.get_num_threads()
    wanted = resolve_threads(n_threads)
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_home() -> str:
    """Where sktransfer keeps files it derives from models (exported ONNX graphs).

    ``SKTRANSFER_HOME``, else ``$XDG_CACHE_HOME/sktransfer``, else ``~/.cache/sktransfer``.
    """
    home = os.environ.get("SKTRANSFER_HOME")
    if home:
        return os.path.expanduser(home)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sktransfer")


@contextlib.contextmanager
def evaluating(module: Any) -> Iterator[None]:
    """Eval mode inside the block; after it, every submodule's own mode again (a module's
    ``train(flag)`` would set them all alike: a frozen encoder inside a new head, in eval
    mode, would come back with its dropout on)."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


@contextlib.contextmanager
def autocasting(device: str, precision: str) -> Iterator[None]:
    """Autocast to ``precision`` on ``device`` inside the block (nothing for float32); the
    forward passes of training run in it, and their backward follows its dtypes."""
    import torch

    if precision == "float32":
        yield
        return
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


@contextlib.contextmanager
def inference(device: str, precision: str) -> Iterator[None]:
    """``torch.inference_mode`` plus autocast for reduced precisions."""
    import torch

    with torch.inference_mode(), autocasting(device, precision):
        yield


def to_device(tensor: Any, device: Any) -> Any:
    """``tensor`` (on the CPU) on ``device`` (a name or a ``torch.device``): to a CUDA device
    through pinned memory, without waiting for the copy (the caching host allocator keeps
    the pinned block until the copy is done); on the CPU, itself."""
    if not str(device).startswith("cuda"):
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def weights_digest(module: Any) -> str:
    """SHA-256 of a module's state dict: names, dtypes, shapes and raw bytes, in order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
