"""timm image backbones: hub names, local checkpoints and folders, packaged weights.

Features are taken the ways timm supports: ``forward_features`` + ``forward_head(pre_logits=True)``
for the pooled output, ``forward_intermediates`` for inner layers. Checkpoints are read with
safetensors or ``torch.load(weights_only=True)``: no arbitrary pickle is ever executed.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sktransfer.backbones import _hub
from sktransfer.backbones._contract import Layers, Trainable
from sktransfer.backbones._registry import get_backbone_spec, list_backbones
from sktransfer.backbones._runtime import load_once, weights_digest
from sktransfer.exceptions import ModelUnavailableError

RANDOM_WEIGHTS_LICENSE = "none (random weights)"
_RANDOM_SEED = 0


def _local_hint() -> str:
    offline = [r["name"] for r in list_backbones("timm") if r["available_offline"]]
    hint = (
        "To use weights you have on disk, pass ImageEmbedder(model='<timm architecture>', "
        "weights='/path/to/model.safetensors'), or model='/path/to/folder' for a folder saved "
        "by timm (config.json + model.safetensors)."
    )
    if offline:
        hint += f" Pretrained models that work offline here: {', '.join(offline)}."
    else:
        hint += " For offline pretrained models: pip install 'sktransfer[offline]'."
    return hint


@dataclass
class TimmBackbone:
    """A loaded timm network in eval mode, without its classifier, plus what describes it."""

    name: str
    model: Any
    data_config: dict[str, Any]
    license: str
    digest: str
    device: str
    _gmacs: float | None = field(default=None, repr=False)
    engines: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def n_layers(self) -> int:
        """How many intermediate layers ``layer=`` can select (``forward_intermediates``)."""
        return len(getattr(self.model, "feature_info", None) or ())

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 0) or 0)

    @property
    def native_pooling(self) -> str | None:
        """The pooling of the model's own head: "avg", "max", "cls" or None."""
        model = self.model
        pool = getattr(model, "global_pool", None)
        if pool is None:
            pool = getattr(getattr(model, "head", None), "global_pool", None)
        if isinstance(pool, str):
            return {"token": "cls", "avg": "avg", "max": "max"}.get(pool)
        pool_type = getattr(pool, "pool_type", None)
        if isinstance(pool_type, str) and pool_type in ("avg", "fast", "fastavg"):
            return "avg"
        if pool_type == "max":
            return "max"
        return None

    def check_layers(self, layers: Layers, pooling: str) -> None:
        """Raise a clear ValueError when ``layers``/``pooling`` do not fit this model."""
        for layer in layers:
            if layer is None:
                continue
            n = self.n_layers
            if n == 0:
                raise ValueError(f"model '{self.name}' does not expose intermediate layers")
            if not -n <= layer < n:
                raise ValueError(
                    f"layer={layer} is out of range: '{self.name}' has {n} layers, "
                    f"use 0..{n - 1} (or -{n}..-1 from the end), or None for the pooled output"
                )
        if pooling == "cls" and self.num_prefix_tokens == 0:
            raise ValueError(
                f"pooling='cls' needs a class token, and '{self.name}' has none; "
                "use pooling='avg' or 'max'"
            )

    def normalize_layer(self, layer: int | None) -> int | None:
        """A non-negative layer index (or None for the pooled output)."""
        return layer + self.n_layers if layer is not None and layer < 0 else layer

    def output_dims(self, layers: Layers, pooling: str) -> list[int]:
        """The width of each requested layer's pooled features, from timm's metadata.

        An inner layer has its ``feature_info`` channel count; the pooled output has the
        width of the model's pre-logits (``head_hidden_size``) when its own head pools, and
        the final feature map's ``num_features`` otherwise. No forward pass is run.
        """
        self.check_layers(layers, pooling)
        model = self.model
        widths = []
        for layer in layers:
            if layer is not None:
                widths.append(int(model.feature_info[self.normalize_layer(layer)]["num_chs"]))
            elif pooling == self.native_pooling:
                widths.append(int(getattr(model, "head_hidden_size", None)
                                  or model.num_features))
            else:
                widths.append(int(model.num_features))
        return widths

    @property
    def max_seq_length(self) -> None:
        return None

    def trainable(self, n_classes: int) -> Trainable:
        """A private copy with a new ``n_classes`` head; groups are timm's coarse groups."""
        from timm.models import group_parameters

        net = copy.deepcopy(self.model).cpu()  # the shared frozen copy stays untouched
        net.reset_classifier(n_classes)
        head = list(net.get_classifier().parameters())
        head_ids = {id(p) for p in head}
        named = dict(net.named_parameters())
        groups = [[named[name] for name in names if id(named[name]) not in head_ids]
                  for names in group_parameters(net, net.group_matcher(coarse=True)).values()]
        for parameter in net.parameters():
            parameter.requires_grad_(id(parameter) in head_ids)
        return Trainable(TimmClassifier(net), [g for g in groups if g], head)

    def features(self, x: Any, layers: Layers, pooling: str) -> Any:
        """The pooled, concatenated features of ``layers`` as a torch tensor (traceable)."""
        model = self.model
        inner = sorted({self.normalize_layer(layer) for layer in layers if layer is not None})
        pooled: dict[int | None, Any] = {}
        final = None
        if inner:
            result = model.forward_intermediates(
                x, indices=inner, intermediates_only=None not in layers,
                **({"return_prefix_tokens": True} if pooling == "cls" else {}),
            )
            final, intermediates = (None, result) if None not in layers else result
            for index, out in zip(inner, intermediates, strict=True):
                pooled[index] = out[1][:, 0] if pooling == "cls" else _pool_spatial(out, pooling)
        if None in layers:
            features = model.forward_features(x) if final is None else final
            if pooling == self.native_pooling:
                pooled[None] = model.forward_head(features, pre_logits=True)
            else:
                pooled[None] = self._pool_final(features, pooling)
        return torch.cat([pooled[self.normalize_layer(layer)] for layer in layers], dim=1)

    @property
    def gmacs(self) -> float:
        """Multiply-accumulates of one image at the model's input size, in billions."""
        if self._gmacs is None:
            from torch.utils.flop_counter import FlopCounterMode

            probe = torch.zeros((1, *tuple(self.data_config["input_size"])), device=self.device)
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                self.model.forward_features(probe)
            self._gmacs = counter.get_total_flops() / 2e9
        return self._gmacs

    def _pool_final(self, features: Any, pooling: str) -> Any:
        if features.ndim == 3:  # tokens (N, T, C)
            if pooling == "cls":
                return features[:, 0]
            patches = features[:, self.num_prefix_tokens:]
            return patches.mean(dim=1) if pooling == "avg" else patches.amax(dim=1)
        if getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            features = features.permute(0, 3, 1, 2)
        return _pool_spatial(features, pooling)


class TimmClassifier(torch.nn.Module):
    """A timm network with its new head: logits, or the pre-logits features the head reads."""

    def __init__(self, net: Any):
        super().__init__()
        self.net = net

    def forward(self, x: Any) -> Any:
        return self.net(x)

    def embed(self, x: Any) -> Any:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


def _pool_spatial(features: Any, pooling: str) -> Any:
    if features.ndim == 2:
        return features
    return features.mean(dim=(2, 3)) if pooling == "avg" else features.amax(dim=(2, 3))


def get_timm_backbone(model: str, weights: str, device: str) -> TimmBackbone:
    """The shared backbone for (model, weights, device), loaded at most once per process.

    Local files are part of the key with their size, mtime, ctime and inode, checked on each
    call: a checkpoint or model folder overwritten in place is loaded again, never served
    under its old identity.
    """
    weights_key = weights if weights in ("pretrained", "random") else _stamp(Path(weights))
    folder = Path(model).expanduser()
    model_key = (model, *(_stamp(folder / name) for name in _FOLDER_FILES)) \
        if folder.is_dir() else model
    return load_once(("timm", model_key, weights_key, device),
                     lambda: _load(model, weights, device))


_FOLDER_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def _stamp(path: Path) -> tuple:
    """What identifies a file's current content without reading it."""
    path = path.expanduser().resolve()
    try:
        info = path.stat()
    except OSError:
        return (str(path),)
    return (str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def _load(model: str, weights: str, device: str) -> TimmBackbone:
    import timm

    spec = get_backbone_spec(model, "timm")
    if spec is not None:
        net = _create(spec.architecture)
        if weights == "pretrained":
            _load_state_dict(net, spec.load(), source=f"packaged weights of '{model}'")
        license_ = spec.license
    elif model.startswith("hf-hub:") or Path(model).expanduser().is_dir():
        folder = (
            _hub.hf_snapshot(model.removeprefix("hf-hub:"), local_hint=_local_hint())
            if model.startswith("hf-hub:")
            else Path(model).expanduser()
        )
        net, license_, weights_file = _from_folder(folder)
        if weights == "pretrained":
            _load_state_dict(net, read_checkpoint(weights_file), source=str(weights_file))
    elif Path(model).expanduser().is_file():
        raise ValueError(
            f"model={model!r} is a file; pass the timm architecture as model= and the file as "
            f"weights=, e.g. ImageEmbedder(model='resnet50', weights={model!r})"
        )
    else:
        net = _create(model)
        license_ = net.pretrained_cfg.get("license") or "unknown"
        if weights == "pretrained":
            path = _pretrained_file(model, net.pretrained_cfg)
            _load_state_dict(net, read_checkpoint(path), source=str(path))
    if weights == "random":
        license_ = RANDOM_WEIGHTS_LICENSE
    elif weights != "pretrained":
        path = Path(weights).expanduser()
        _load_state_dict(net, read_checkpoint(path), source=str(path))
    net.reset_classifier(0)
    net.eval()
    # channels_last: oneDNN's fast convolution layout on CPU (1.3-1.6x for convnets here).
    net.to(device=device, memory_format=torch.channels_last)
    return TimmBackbone(
        name=model,
        model=net,
        data_config=timm.data.resolve_model_data_config(net),
        license=license_,
        digest=weights_digest(net),
        device=device,
    )


def _create(architecture: str, **kwargs: Any) -> Any:
    import timm

    name = architecture.split(".")[0]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown image model {architecture!r}: not registered in sktransfer "
                         f"and not a timm architecture.{hint}")
    # Random weights are reproducible: the same seed in every process, without touching the
    # caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_SEED)
        return timm.create_model(architecture, pretrained=False, **kwargs)


def _from_folder(folder: Path) -> tuple[Any, str, Path]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json; a timm model folder is written by "
                         "timm.models.save_for_hf or downloaded from the hub")
    config = json.loads(config_file.read_text())
    architecture = config.get("architecture")
    if not architecture:
        raise ValueError(f"{config_file} names no 'architecture'")
    pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    kwargs: dict[str, Any] = {"num_classes": config.get("num_classes", 1000)}
    kwargs.update(config.get("model_args") or {})
    net = _create(architecture, pretrained_cfg_overlay=pretrained_cfg, **kwargs)
    license_ = pretrained_cfg.get("license") or config.get("license") or "unknown"
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return net, license_, folder / name
    raise ValueError(f"{folder} has no model.safetensors or pytorch_model.bin")


def _pretrained_file(model: str, cfg: dict[str, Any]) -> Path:
    hint = _local_hint()
    if cfg.get("hf_hub_id"):
        names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else ()
        return _hub.hf_file(cfg["hf_hub_id"], (*names, "model.safetensors", "pytorch_model.bin"),
                            local_hint=hint)
    if cfg.get("url"):
        return _hub.url_file(cfg["url"], local_hint=hint)
    raise ModelUnavailableError(f"timm has no pretrained weights for '{model}'. {hint}")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict from a safetensors file or a weights-only torch checkpoint."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # SafetensorError, OSError: both name no path
            raise ValueError(f"{path} is not a readable safetensors file "
                             f"({type(error).__name__}: {error})") from None
    if path.suffix == ".npz":
        raise ValueError(f"{path}: .npz (JAX) checkpoints are not supported; use the timm "
                         "safetensors release of the same model")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds more than tensors, and sktransfer never unpickles arbitrary objects "
            f"(torch.load(weights_only=True) refused it: {str(error).splitlines()[0]}). "
            "Re-save it with torch.save(model.state_dict(), ...) or as safetensors."
        ) from None
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def _load_state_dict(net: Any, state_dict: dict[str, Any], *, source: str) -> None:
    try:
        net.load_state_dict(state_dict, strict=True)
        return
    except RuntimeError as first_error:
        error = first_error
    # Original (non-timm) checkpoint layouts are remapped by timm's own filter for the family.
    import sys

    filter_fn = getattr(sys.modules[type(net).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            net.load_state_dict(filter_fn(state_dict, net), strict=True)
            return
        except (RuntimeError, KeyError, ValueError) as second_error:
            error = second_error
    summary = str(error).split("\n\t")[:3]
    raise ValueError(f"weights from {source} do not fit {type(net).__name__}: "
                     + " | ".join(summary)) from None
