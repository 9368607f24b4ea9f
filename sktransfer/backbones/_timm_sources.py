"""Where a timm model comes from, found before any network is built: a registered name, a
timm folder (local or ``hf-hub:``), or a timm hub name whose pretrained file is looked up
first, so that offline use fails at once whatever the model's size.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sktransfer.backbones._checkpoint import read_checkpoint
from sktransfer.backbones._hub import hf_file, hf_snapshot, url_file
from sktransfer.backbones._registry import get_backbone_spec, offline_hint
from sktransfer.exceptions import ModelUnavailableError


def _local_hint() -> str:
    return offline_hint(
        "timm", "To use weights you have on disk, pass ImageEmbedder(model='<timm "
        "architecture>', weights='/path/to/model.safetensors'), or model='/path/to/folder' for "
        "a folder saved by timm (config.json + model.safetensors).", "pretrained models")


@dataclass
class Origin:
    """Where a model comes from, found before any network is built."""

    architecture: str
    license: str
    source: str
    state: Any = None  # () -> state dict of the pretrained weights
    kwargs: dict[str, Any] = field(default_factory=dict)  # from a folder's config.json


def find_origin(model: str, weights: str) -> Origin:
    """Where ``model`` comes from: a registered name, a timm folder (local or ``hf-hub:``), or
    a timm name whose pretrained file is looked up (and fails offline) before any build."""
    spec = get_backbone_spec(model, "timm")
    if spec is not None:
        where = f" (from {spec.requires})" if spec.requires else ""
        return Origin(spec.architecture or model, spec.license,
                      f"registered weights '{model}'{where}", spec.load)
    if model.startswith("hf-hub:") or Path(model).expanduser().is_dir():
        folder = (
            hf_snapshot(model.removeprefix("hf-hub:"), local_hint=_local_hint())
            if model.startswith("hf-hub:")
            else Path(model).expanduser()
        )
        return _from_folder(folder)
    if Path(model).expanduser().is_file():
        raise ValueError(
            f"model={model!r} is a file; pass the timm architecture as model= and the file as "
            f"weights=, e.g. ImageEmbedder(model='resnet50', weights={model!r})"
        )
    from timm.models import get_pretrained_cfg

    check_architecture(model)
    cfg = get_pretrained_cfg(model)
    cfg = cfg.to_dict() if cfg is not None else {}
    origin = Origin(model, cfg.get("license") or "unknown", model)
    if weights == "pretrained":
        path = _pretrained_file(model, cfg)  # offline fails here, before the build
        origin.source, origin.state = str(path), functools.partial(read_checkpoint, path)
    return origin


def check_architecture(architecture: str) -> None:
    import timm

    name = architecture.split(".")[0]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown image model {architecture!r}: not registered in sktransfer "
                         f"and not a timm architecture.{hint}")


def _from_folder(folder: Path) -> Origin:
    """A timm folder's ``config.json`` honoured whole: architecture, ``num_classes``,
    ``model_args`` and its ``pretrained_cfg`` (preprocessing, licence)."""
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
    if pretrained_cfg:
        kwargs["pretrained_cfg_overlay"] = pretrained_cfg
    license_ = pretrained_cfg.get("license") or config.get("license") or "unknown"
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            path = folder / name
            return Origin(architecture, license_, str(path.resolve()),
                           functools.partial(read_checkpoint, path), kwargs)
    raise ValueError(f"{folder} has no model.safetensors or pytorch_model.bin")


def _pretrained_file(model: str, cfg: dict[str, Any]) -> Path:
    hint = _local_hint()
    if cfg.get("hf_hub_id"):
        names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else ()
        return hf_file(cfg["hf_hub_id"], (*names, "model.safetensors", "pytorch_model.bin"),
                            local_hint=hint)
    if cfg.get("url"):
        return url_file(cfg["url"], local_hint=hint)
    raise ModelUnavailableError(f"timm has no pretrained weights for '{model}'. {hint}")
