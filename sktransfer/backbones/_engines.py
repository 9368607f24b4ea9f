"""How a timm backbone runs: eager torch, ``torch.compile``, or ONNX Runtime, and which is best.

Measured on 2-core CPUs (docs/performance.md): small depthwise networks (EfficientNet,
MobileNet) are memory-bound, and ONNX Runtime float32 runs them 2.5-5x faster than eager
float32, well ahead of bfloat16; larger networks (ResNet-50, ConvNeXt, ViT) gain most from
bfloat16 + channels_last where the CPU has native bfloat16, and from ONNX Runtime where it has
not. ``backend="auto"`` follows that rule (:func:`plan_execution`).

ONNX graphs are exported once per (weights, layers, pooling, input size, torch version) and kept
under :func:`sktransfer.backbones._runtime.cache_home` (written atomically); each new session is
checked against the eager float32 model before it is used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from sktransfer.backbones._contract import ImageBackbone
from sktransfer.backbones._runtime import (
    cache_home,
    faithful_precision,
    inference,
    min_cosine,
    resolve_precision,
    resolve_threads,
    torch_threads,
)

logger = logging.getLogger("sktransfer")

# Below this many multiply-accumulates per image a network is memory-bound on CPU: float32
# ONNX Runtime beats bfloat16 eager (Lite0 0.4, MobileNetV3 0.2; ResNet-50 4.1, ConvNeXt-T 4.5).
SMALL_MODEL_GMACS = 1.5
ONNX_OPSET = 17
_ONNX_MIN_COSINE = 0.9999  # a session must agree with eager float32 this well to be used
_LOCK = threading.Lock()


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime and the ``onnx`` package (needed to export) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


@dataclass(frozen=True)
class Execution:
    """How to run a backbone: the backend, the precision and the thread count.

    ``fallback``: when ``backend="auto"`` picked ONNX Runtime, the precision eager torch runs
    at if the graph cannot be exported (then the call falls back instead of failing).
    """

    backend: str
    precision: str
    threads: int
    fallback: str | None = None


def plan_execution(backbone: ImageBackbone, backend: str, precision: str, n_threads: int | None,
                   layers: tuple[int | None, ...], pooling: str) -> Execution:
    """What ``backend``/``precision``/``n_threads`` mean for this backbone on this machine.

    Nothing is exported, compiled or opened here (the cache space of a fully cached call is
    computed from this plan). ``backend="auto"`` on CPU: ONNX Runtime float32 when it is
    installed, the precision allows float32, and either the network is small (<
    ``SMALL_MODEL_GMACS`` GMACs per image) or the CPU lacks native bfloat16; otherwise eager
    torch (bfloat16 + channels_last where native). A model whose export already failed in
    this process is planned on eager torch.
    """
    threads = resolve_threads(n_threads)
    resolved = resolve_precision(precision, backbone.device)
    on_cpu = backbone.device == "cpu"
    # A reduced precision that will run is checked for this model (once) before it is used.
    faithful = functools.partial(faithful_precision, backbone, precision)
    if backend == "onnxruntime":
        if not on_cpu:
            raise ValueError("backend='onnxruntime' runs on the CPU; use device='cpu' or "
                             "backend='torch'")
        if precision not in ("auto", "float32"):
            raise ValueError(f"backend='onnxruntime' runs float32; precision={precision!r} "
                             "needs backend='torch'")
        if not onnxruntime_available():
            raise ImportError("backend='onnxruntime' needs onnxruntime and onnx: "
                              "pip install onnxruntime onnx")
        return Execution("onnxruntime", "float32", threads)
    if backend != "auto":
        return Execution(backend, faithful(resolved), threads)
    wants_onnx = (
        on_cpu
        and precision in ("auto", "float32")
        and onnxruntime_available()
        and not isinstance(backbone.engines.get(_onnx_key(backbone, layers, pooling, threads)),
                           RuntimeError)
        and (resolved == "float32" or backbone.gmacs < SMALL_MODEL_GMACS)
    )
    if wants_onnx:
        return Execution("onnxruntime", "float32", threads, fallback=resolved)
    return Execution("torch", faithful(resolved), threads)


def open_engine(backbone: ImageBackbone, execution: Execution, layers: tuple[int | None, ...],
                pooling: str, batch_size: int) -> Any:
    """A callable embedding normalised float32 batches (N, 3, H, W), torch or numpy, into a
    float32 (N, D) array, as ``execution`` says. Engines are built once per backbone and
    settings; its ``execution`` attribute says what actually runs (an ONNX export that fails
    under ``backend="auto"`` falls back to eager torch, with one warning in the log)."""
    layers = tuple(backbone.normalize_layer(layer) for layer in layers)
    if execution.backend == "onnxruntime":
        try:
            return onnx_engine(backbone, layers, pooling, execution.threads)
        except RuntimeError:
            if execution.fallback is None:
                raise
            # a fallback exists under precision="auto" only, so its precision is checked too
            execution = Execution("torch", faithful_precision(backbone, "auto",
                                                              execution.fallback),
                                  execution.threads)
    if execution.backend == "compile":
        return _engine(backbone, ("compile", layers, pooling, execution, batch_size),
                       lambda: _CompiledEngine(backbone, layers, pooling, execution,
                                               batch_size))
    return _EagerEngine(backbone, layers, pooling, execution)


class _EagerEngine:
    """Eager PyTorch: channels_last, ``inference_mode``, autocast for reduced precision."""

    def __init__(self, backbone: ImageBackbone, layers: tuple[int | None, ...], pooling: str,
                 execution: Execution):
        self.backbone, self.layers, self.pooling = backbone, layers, pooling
        self.execution = execution

    def __call__(self, batch: Any) -> np.ndarray:
        import torch

        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)
        x = x.to(self.backbone.device)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch_threads(self.execution.threads), \
                inference(self.backbone.device, self.execution.precision):
            out = self.backbone.features(x, self.layers, self.pooling)
        return np.asarray(out.float().cpu().numpy())


def _features_module(backbone: ImageBackbone, layers: tuple[int | None, ...], pooling: str) -> Any:
    """A torch module computing a backbone's pooled features (what is exported or compiled)."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = backbone.model  # registered, so export and compile see the weights

        def forward(self, x: Any) -> Any:
            return backbone.features(x, layers, pooling)

    return Features().eval()


def _engine(backbone: ImageBackbone, key: tuple[Any, ...], build: Any) -> Any:
    engine = backbone.engines.get(key)
    if engine is None:
        with _LOCK:
            engine = backbone.engines.get(key)
            if engine is None:
                engine = backbone.engines[key] = build()
    if isinstance(engine, Exception):
        raise engine
    return engine


def onnx_engine(backbone: ImageBackbone, layers: tuple[int | None, ...], pooling: str,
                threads: int) -> Any:
    """A callable running the backbone on ONNX Runtime with ``threads`` threads."""
    def build() -> Any:
        try:
            return _OnnxEngine(backbone, layers, pooling, threads)
        except Exception as error:  # remembered: export is tried once
            failure = RuntimeError(f"'{backbone.name}' (layers {list(layers)}, {pooling} "
                                   f"pooling) cannot run on ONNX Runtime: "
                                   f"{type(error).__name__}: {error}")
            failure.__cause__ = error
            logger.warning("%s; backend='auto' uses eager torch instead", failure)
            return failure

    return _engine(backbone, _onnx_key(backbone, layers, pooling, threads), build)


def _onnx_key(backbone: ImageBackbone, layers: tuple[int | None, ...], pooling: str,
              threads: int) -> tuple[Any, ...]:
    normalized = tuple(backbone.normalize_layer(layer) for layer in layers)
    return ("onnxruntime", normalized, pooling, threads)


class _OnnxEngine:
    def __init__(self, backbone: ImageBackbone, layers: tuple[int | None, ...], pooling: str,
                 threads: int):
        import onnxruntime

        path = onnx_file(backbone, layers, pooling)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle ORT threads sleep instead of spinning: the decode threads need those cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.execution = Execution("onnxruntime", "float32", threads)
        _check_agrees(backbone, layers, pooling, self)

    def __call__(self, batch: Any) -> np.ndarray:
        if hasattr(batch, "contiguous"):
            batch = batch.contiguous().numpy()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input: batch})[0], dtype=np.float32)


def _check_agrees(backbone: ImageBackbone, layers: tuple[int | None, ...], pooling: str,
                  engine: Any) -> None:
    """Refuse an engine whose output drifts from eager float32 on a seeded probe batch."""
    import torch

    size = tuple(backbone.data_config["input_size"])
    probe = np.random.default_rng(0).standard_normal((2, *size)).astype(np.float32)
    eager = _EagerEngine(backbone, layers, pooling, Execution("torch", "float32", 1))
    reference = eager(torch.from_numpy(probe))
    got = engine(probe)
    cosine = min_cosine(reference, got) if got.shape == reference.shape else None
    if cosine is None or not cosine >= _ONNX_MIN_COSINE:  # NaN agrees with nothing
        raise RuntimeError(f"the exported graph disagrees with the eager model (cosine "
                           f"{'n/a' if cosine is None else cosine})")


def onnx_file(backbone: ImageBackbone, layers: tuple[int | None, ...], pooling: str) -> str:
    """The path of the backbone's ONNX graph, exported now unless an earlier run did."""
    import torch

    identity = {"model": backbone.name, "weights": backbone.digest, "layers": list(layers),
                "pooling": pooling, "input_size": list(backbone.data_config["input_size"]),
                "torch": torch.__version__, "opset": ONNX_OPSET}
    name = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    folder = os.path.join(cache_home(), "onnx")
    path = os.path.join(folder, f"{name}.onnx")
    if os.path.isfile(path):
        return path
    os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    module = _features_module(backbone, layers, pooling)
    probe = torch.zeros((1, *backbone.data_config["input_size"]))
    logger.info("exporting %s (layers %s, %s pooling) to ONNX", backbone.name, layers, pooling)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (probe,), buffer, input_names=["pixels"],
                          output_names=["features"], opset_version=ONNX_OPSET,
                          dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                          dynamo=False)
    # Atomic: a reader sees the whole graph or none; concurrent exporters write the same bytes.
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".onnx.tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(buffer.getvalue())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


class _CompiledEngine:
    def __init__(self, backbone: ImageBackbone, layers: tuple[int | None, ...], pooling: str,
                 execution: Execution, batch_size: int):
        import torch

        self.backbone, self.execution, self.batch_size = backbone, execution, batch_size
        # One static shape: the last, shorter batch is padded, so nothing recompiles.
        self.module = torch.compile(_features_module(backbone, layers, pooling), dynamic=False)

    def __call__(self, x: Any) -> np.ndarray:
        import torch

        x = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
        n = x.shape[0]
        padding = -n % self.batch_size
        if padding:
            x = torch.cat([x, x.new_zeros((padding, *x.shape[1:]))])
        x = x.to(self.backbone.device).contiguous(memory_format=torch.channels_last)
        out = []
        with torch_threads(self.execution.threads), \
                inference(self.backbone.device, self.execution.precision):
            for start in range(0, x.shape[0], self.batch_size):
                out.append(self.module(x[start:start + self.batch_size]).float().cpu())
        return np.asarray(torch.cat(out)[:n].numpy())
