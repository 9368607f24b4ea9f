"""timm image backbones: hub names, local checkpoints and folders, packaged weights.

Features are taken the ways timm supports: ``forward_features`` + ``forward_head(pre_logits=True)``
for the pooled output, ``forward_intermediates`` for inner layers. Checkpoints are read with
safetensors or ``torch.load(weights_only=True)``: no arbitrary pickle is ever executed.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from sktransfer._images import Preprocessor, check_input_size, check_preprocessing
from sktransfer.backbones._checkpoint import (
    checkpoint_img_size,
    drop_head,
    load_backbone_state,
    read_checkpoint,
)
from sktransfer.backbones._contract import Layers, Trainable
from sktransfer.backbones._runtime import (
    evaluating,
    inference,
    load_once,
    min_cosine,
    to_device,
    weights_digest,
)
from sktransfer.backbones._timm_sources import check_architecture, find_origin
from sktransfer.exceptions import describe

logger = logging.getLogger("sktransfer")

RANDOM_WEIGHTS_LICENSE = "none (random weights)"
_RANDOM_SEED = 0


@dataclass
class TimmBackbone:
    """A loaded timm network in eval mode, without its classifier, plus what describes it."""

    name: str
    model: Any
    data_config: dict[str, Any]
    license: str
    digest: str
    device: str
    source: str = ""  # where the weights came from: a file, a registered name, "random"
    model_args: dict[str, Any] = field(default_factory=dict)  # given to timm.create_model
    _gmacs: float | None = field(default=None, repr=False)
    engines: dict[Any, Any] = field(default_factory=dict, repr=False)
    precision_checks: dict[str, float] = field(default_factory=dict, repr=False)

    modality: ClassVar[str] = "image"

    def precision_cosine(self, precision: str) -> float:
        """The smallest cosine between this model's pooled features of real photos (the
        ones scikit-learn ships), preprocessed as the model's own, at ``precision`` and at
        float32."""
        from sklearn.datasets import load_sample_images

        from sktransfer._decode import array_to_image

        preprocess = Preprocessor(self.data_config)
        x = torch.from_numpy(np.stack([preprocess(array_to_image(photo))
                                       for photo in load_sample_images().images]))
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        outputs = []
        for each in ("float32", precision):
            with inference(self.device, each):
                outputs.append(self.features(x, (None,), "avg").float().cpu().numpy())
        return min_cosine(*outputs)

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
        _depthwise_in_float32(net)
        head = list(net.get_classifier().parameters())
        head_ids = {id(p) for p in head}
        named = dict(net.named_parameters())
        groups = [[named[name] for name in names if id(named[name]) not in head_ids]
                  for names in group_parameters(net, net.group_matcher(coarse=True)).values()]
        for parameter in net.parameters():
            parameter.requires_grad_(id(parameter) in head_ids)
        groups = [g for g in groups if g]
        module = TimmClassifier(net)
        probe = torch.zeros((1, *tuple(self.data_config["input_size"])))
        staged = module.split(groups, probe)
        if not staged:
            logger.debug("%s: no split at its layer groups; frozen layers below the "
                         "trainable ones run every epoch", self.name)
        return Trainable(module, groups, head, stages=module if staged else None)

    def features(self, x: Any, layers: Layers, pooling: str) -> Any:
        """The pooled, concatenated features of ``layers`` as a torch tensor (traceable)."""
        model = self.model
        inner = sorted({index for layer in layers
                        if (index := self.normalize_layer(layer)) is not None})
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
    """A timm network with its new head: logits, or the pre-logits features the head reads.

    Where the family's ``forward_features`` is a chain of stages, one per coarse layer group
    (EfficientNet and MobileNet-style ``blocks``, ResNet ``layer1..4``, ViT ``blocks``),
    :meth:`split` records them, and :meth:`run_stages` runs any slice of the chain: what
    lets fine-tuning compute the frozen stages below the trainable ones once per fit."""

    def __init__(self, net: Any):
        super().__init__()
        self.net = net
        self._stages: list[tuple[list[Any], Any]] = []  # (modules, function) per stage

    @property
    def n_stages(self) -> int:
        return len(self._stages)

    def split(self, groups: list[list[Any]], probe: Any) -> bool:
        """Split ``forward_features`` into one stage per layer group, if this family's
        stages are known, own exactly their group's parameters, and chained give
        ``forward_features`` on ``probe``; otherwise leave it whole. Returns whether it
        split."""
        stages = _family_stages(self.net)
        if stages is None or len(stages) != len(groups):
            return False
        for (modules, _), group in zip(stages, groups, strict=True):
            owned = {id(p) for owner in modules for p in owner.parameters()}
            if owned != {id(p) for p in group}:
                return False
        self._stages = stages
        with evaluating(self.net), torch.no_grad():
            whole = self.net.forward_features(probe)
            chained = self.run_stages(probe, 0, self.n_stages)
        if whole.shape != chained.shape or not torch.allclose(whole, chained, rtol=1e-4,
                                                              atol=1e-5):
            self._stages = []
            return False
        return True

    def run_stages(self, x: Any, start: int, stop: int) -> Any:
        """Stages ``start`` to ``stop - 1`` on ``x``, the input of stage ``start`` (the
        normalised images when ``start`` is 0)."""
        for _, function in self._stages[start:stop]:
            x = function(x)
        return x

    def stage_modules(self, index: int) -> list[Any]:
        return list(self._stages[index][0])

    def storable(self, boundary: int) -> bool:
        return True

    def rows(self, x: Any) -> list[Any]:
        return list(x.cpu().unbind(0))

    def collate(self, rows: list[Any], device: str) -> Any:
        if rows[0].ndim == 3:  # feature maps: channels_last, the layout the network runs
            # in (see _create); stacking (H, W, C) views builds it without another copy
            batch = torch.stack([row.permute(1, 2, 0) for row in rows]).permute(0, 3, 1, 2)
        else:
            batch = torch.stack(rows)
        return to_device(batch, device)

    def embed_from(self, x: Any, start: int) -> Any:
        """``embed``'s features from the input of stage ``start``."""
        return self.net.forward_head(self.run_stages(x, start, self.n_stages), pre_logits=True)

    def forward(self, x: Any) -> Any:
        return self.net(x)

    def embed(self, x: Any) -> Any:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def classify(self, features: Any) -> Any:
        """Logits from ``embed``'s features: what ``forward`` does after them."""
        net = self.net
        if hasattr(net, "head_drop"):
            features = net.head_drop(features)
        elif getattr(net, "drop_rate", 0):
            features = torch.nn.functional.dropout(features, net.drop_rate, self.training)
        return net.get_classifier()(features)


def _family_stages(net: Any) -> list[tuple[list[Any], Any]] | None:
    """``forward_features`` of the families whose coarse layer groups are a chain, as one
    ``(modules, function)`` per group, bottom to top; None for any other network."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet
    from timm.models.vision_transformer import VisionTransformer

    if getattr(net, "grad_checkpointing", False):
        return None
    if isinstance(net, EfficientNet) and len(net.blocks):
        blocks = list(net.blocks)
        stages = [([net.conv_stem, net.bn1], lambda x: net.bn1(net.conv_stem(x)))]
        stages += [([block], block) for block in blocks[:-1]]
        stages.append(([blocks[-1], net.conv_head, net.bn2],
                       lambda x: net.bn2(net.conv_head(blocks[-1](x)))))
        return stages
    if isinstance(net, ResNet):
        stem = [net.conv1, net.bn1, net.act1, net.maxpool]
        return [(stem, lambda x: net.maxpool(net.act1(net.bn1(net.conv1(x)))))] + [
            ([layer], layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
    if isinstance(net, VisionTransformer) and len(net.blocks):
        blocks = list(net.blocks)
        embedding = _Parameters(net, [name for name, _ in net.named_parameters(recurse=False)])
        stages = [([embedding, net.patch_embed, net.patch_drop, net.norm_pre],
                   lambda x: net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(x)))))]
        stages += [([block], block) for block in blocks[:-1]]
        stages.append(([blocks[-1], net.norm], lambda x: net.norm(blocks[-1](x))))
        return stages
    return None


class _Parameters:
    """A network's own parameters (a ViT's class token and position embedding), as a stage
    owner."""

    def __init__(self, net: Any, names: list[str]):
        self.net, self.names = net, names

    def parameters(self) -> list[Any]:
        return [getattr(self.net, name) for name in self.names]

    def modules(self) -> list[Any]:
        return []


def _depthwise_in_float32(net: Any) -> None:
    """Under CPU autocast, run ``net``'s depthwise convolutions (one input channel per
    group) in float32. They do little arithmetic, so bfloat16 saves them nothing, and
    oneDNN's bfloat16 kernels for their backward are twice as slow as float32's: an
    EfficientNet-Lite0 training step of 32 images at every depth, in micro-batches of 8,
    took 1.65 s in bfloat16 against 1.0 s with this (AMX Xeon, 2 cores; docs/performance.md).
    Elsewhere (CUDA, float32) nothing changes."""
    for module in net.modules():
        if (isinstance(module, torch.nn.Conv2d) and module.groups > 1
                and module.groups == module.in_channels):
            kind: Any = type(module)
            module.__class__ = _float32_under_cpu_autocast(kind)


@functools.cache
def _float32_under_cpu_autocast(cls: Any) -> Any:
    class Float32Conv(cls):
        def forward(self, x: Any) -> Any:
            if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
                with torch.autocast("cpu", enabled=False):
                    return super().forward(x.float())
            return super().forward(x)

    Float32Conv.__name__ = Float32Conv.__qualname__ = cls.__name__
    return Float32Conv


def _pool_spatial(features: Any, pooling: str) -> Any:
    if features.ndim == 2:
        return features
    return features.mean(dim=(2, 3)) if pooling == "avg" else features.amax(dim=(2, 3))


def get_timm_backbone(model: str, weights: str, device: str, *,
                      model_args: dict[str, Any] | None = None,
                      preprocessing: dict[str, Any] | None = None,
                      license: str | None = None) -> TimmBackbone:
    """The shared backbone for these arguments, loaded at most once per process.

    ``model_args`` go to ``timm.create_model`` (``img_size``, ...); ``preprocessing``
    overrides keys of timm's data config; ``license`` names the licence of a weights file.
    Local files are part of the key with their size, mtime, ctime and inode, checked on each
    call: a checkpoint or model folder overwritten in place is loaded again, never served
    under its old identity.
    """
    check_preprocessing(preprocessing)
    weights_key = weights if weights in ("pretrained", "random") else _stamp(Path(weights))
    folder = Path(model).expanduser()
    model_key = (model, *(_stamp(folder / name) for name in _FOLDER_FILES)) \
        if folder.is_dir() else model
    options = json.dumps([model_args or {}, preprocessing or {}, license], sort_keys=True,
                         default=repr)
    return load_once(("timm", model_key, weights_key, device, options),
                     lambda: _load(model, weights, device, dict(model_args or {}),
                                   dict(preprocessing or {}), license))


_FOLDER_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def _stamp(path: Path) -> tuple[Any, ...]:
    """What identifies a file's current content without reading it."""
    path = path.expanduser().resolve()
    try:
        info = path.stat()
    except OSError:
        return (str(path),)
    return (str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def _load(model: str, weights: str, device: str, model_args: dict[str, Any],
          preprocessing: dict[str, Any], license: str | None) -> TimmBackbone:
    origin = find_origin(model, weights)
    if weights == "random":
        state, license_, source = None, RANDOM_WEIGHTS_LICENSE, f"random (seed {_RANDOM_SEED})"
    elif weights == "pretrained":
        state, license_, source = origin.state(), origin.license, origin.source
    else:  # a user's file: its licence is theirs to tell
        path = Path(weights).expanduser().resolve()
        state, license_, source = read_checkpoint(path), "unknown", str(path)
    if license is not None and weights != "random":
        license_ = license
    kwargs = {**origin.kwargs, **model_args}
    if kwargs.get("in_chans", 3) != 3:  # the image pipeline gives every network RGB
        raise ValueError(f"model_args in_chans={kwargs['in_chans']!r}: sktransfer feeds every "
                         "image as RGB (grey ones converted), so the network must take 3 "
                         "input channels; leave in_chans out")
    net = _create(origin.architecture, **kwargs)
    trained_at = None if state is None or "img_size" in kwargs else \
        checkpoint_img_size(net, state)
    if trained_at is not None:  # run it where it was trained, rather than resample it
        logger.info("%s: position embeddings for %d px inputs; building %s with img_size=%d",
                    source, trained_at, origin.architecture, trained_at)
        kwargs["img_size"] = trained_at
        net = _create(origin.architecture, **kwargs)
    head = drop_head(net)
    if state is not None:
        load_backbone_state(net, state, head=head, source=source)
    net.eval()
    # channels_last: oneDNN's fast convolution layout on CPU (1.3-1.6x for convnets here).
    net.to(device=device, memory_format=torch.channels_last)
    return TimmBackbone(
        name=model,
        model=net,
        data_config=_data_config(net, kwargs, preprocessing),
        license=license_,
        digest=weights_digest(net),
        device=device,
        source=source,
        model_args={k: v for k, v in kwargs.items() if k != "pretrained_cfg_overlay"},
    )


def _create(architecture: str, **kwargs: Any) -> Any:
    import timm

    check_architecture(architecture)
    # Random weights are reproducible: the same seed in every process, without touching the
    # caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_SEED)
        try:
            return timm.create_model(architecture, pretrained=False, **kwargs)
        except Exception as error:  # an argument the architecture does not take, or a value
            # it cannot use (timm's asserts often carry no message: the type says what broke)
            args = {k: v for k, v in kwargs.items() if k != "pretrained_cfg_overlay"}
            raise ValueError(f"timm cannot build {architecture!r} with model_args={args}: "
                             f"{describe(error)}") from error


def _data_config(net: Any, kwargs: dict[str, Any],
                 preprocessing: dict[str, Any]) -> dict[str, Any]:
    """timm's data config for ``net``, its input size following ``img_size``, then the
    user's overrides."""
    import timm

    config = dict(timm.data.resolve_model_data_config(net))
    if "img_size" in kwargs:
        height, width = _pair(kwargs["img_size"])
        config["input_size"] = (config["input_size"][0], height, width)
    for key, value in preprocessing.items():
        if key == "input_size":
            value = (3, *_pair(value[-2:] if len(value) == 3 else value))
        config[key] = tuple(value) if isinstance(value, list) else value
    check_input_size(config, "preprocessing" if {"input_size", "crop_pct"} & set(preprocessing)
                     else "the model's configuration (model_args, config.json)")
    patch_embed: Any = getattr(net, "patch_embed", None)
    if (getattr(patch_embed, "strict_img_size", False) and not getattr(
            net, "dynamic_img_size", False)
            and tuple(patch_embed.img_size) != tuple(config["input_size"][1:])):
        raise ValueError(
            f"{type(net).__name__} takes {tuple(patch_embed.img_size)} inputs only; to run it at "
            f"{tuple(config['input_size'][1:])}, pass model_args={{'img_size': "
            f"{config['input_size'][1]}}} (which resamples its position embeddings)")
    return config


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)
