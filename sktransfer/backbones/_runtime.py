"""What every backbone family shares: the per-process cache, devices, precision, digests."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

logger = logging.getLogger("sktransfer")

T = TypeVar("T")

_LOADED: dict[Hashable, Any] = {}
_LOCK = threading.Lock()


def load_once(key: Hashable, load: Callable[[], T]) -> T:
    """Return the backbone for ``key``, calling ``load`` only the first time in this process.

    Clones, unpickled copies and grid-search candidates with the same identity share one copy.
    """
    backbone = _LOADED.get(key)
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
    """``"auto"`` is float32 on CPU and bfloat16 on CUDA devices that support it natively."""
    import torch

    if precision != "auto":
        if precision == "float16" and not device.startswith("cuda"):
            raise ValueError("precision='float16' needs a CUDA device; use 'bfloat16' on CPU")
        return precision
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


@contextlib.contextmanager
def inference(device: str, precision: str) -> Iterator[None]:
    """``torch.inference_mode`` plus autocast for reduced precisions."""
    import torch

    device_type = torch.device(device).type
    with torch.inference_mode():
        if precision == "float32":
            yield
        else:
            dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
            with torch.autocast(device_type=device_type, dtype=dtype):
                yield


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
