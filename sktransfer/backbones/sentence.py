"""sentence-transformers text backbones: packaged models, hub names and local folders."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sktransfer.backbones import _hub
from sktransfer.backbones._registry import get_backbone_spec, list_backbones
from sktransfer.backbones._runtime import inference, load_once, weights_digest


def _local_hint() -> str:
    offline = [r["name"] for r in list_backbones("sentence") if r["available_offline"]]
    hint = ("To use a model you have on disk, pass TextEmbedder(model='/path/to/folder') with a "
            "folder saved by SentenceTransformer.save().")
    if offline:
        hint += f" Models that work offline here: {', '.join(offline)}."
    else:
        hint += " For offline models: pip install 'sktransfer[offline]'."
    return hint


@dataclass
class SentenceBackbone:
    """A loaded SentenceTransformer in eval mode, plus what describes it."""

    name: str
    model: Any
    license: str
    digest: str
    device: str

    @property
    def n_features(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        return int(getter())

    def encode(self, texts: list[str], *, batch_size: int, normalize: bool, precision: str,
               progress: bool) -> np.ndarray:
        self.model.eval()
        with inference(self.device, precision):
            out = self.model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=normalize,
                show_progress_bar=progress,
                convert_to_numpy=False,
                convert_to_tensor=True,
            )
        return out.float().cpu().numpy()


def get_sentence_backbone(model: str, device: str, trust_remote_code: bool) -> SentenceBackbone:
    """The shared backbone for (model, device), loaded at most once per process."""
    return load_once(("sentence", model, device, trust_remote_code),
                     lambda: _load(model, device, trust_remote_code))


def _load(model: str, device: str, trust_remote_code: bool) -> SentenceBackbone:
    from sentence_transformers import SentenceTransformer

    spec = get_backbone_spec(model)
    if spec is not None and spec.family != "sentence":
        raise ValueError(f"'{model}' is a {spec.family} model, not a text model")
    if spec is not None:
        folder, license_ = Path(spec.load()), spec.license
    elif Path(model).expanduser().is_dir():
        folder, license_ = Path(model).expanduser(), None
    else:
        repo_id = model if "/" in model else f"sentence-transformers/{model}"
        folder, license_ = _hub.hf_snapshot(repo_id, local_hint=_local_hint()), None
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a sentence-transformers model folder "
                         "(no modules.json or config.json)")
    with _quiet_transformers():
        net = SentenceTransformer(str(folder), device=device,
                                  trust_remote_code=trust_remote_code, local_files_only=True)
    net.eval()
    return SentenceBackbone(
        name=model,
        model=net,
        license=license_ or _license_from_card(folder),
        digest=weights_digest(net),
        device=device,
    )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-load progress bar; loading is logged by sktransfer instead."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _license_from_card(folder: Path) -> str:
    """The ``license:`` field of the model card's YAML header, or "unknown"."""
    card = folder / "README.md"
    if card.is_file():
        lines = card.read_text(errors="replace").splitlines()
        if lines and lines[0].strip() == "---":
            for line in lines[1:]:
                if line.strip() == "---":
                    break
                key, _, value = line.partition(":")
                if key.strip() == "license" and value.strip():
                    return value.strip()
    return "unknown"
