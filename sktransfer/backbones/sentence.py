"""sentence-transformers text backbones: packaged models, hub names and local folders."""

from __future__ import annotations

import contextlib
import copy
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from sktransfer.backbones import _hub
from sktransfer.backbones._contract import Layers, Trainable
from sktransfer.backbones._registry import get_backbone_spec, offline_hint
from sktransfer.backbones._runtime import (
    evaluating,
    inference,
    load_once,
    min_cosine,
    to_device,
    weights_digest,
)
from sktransfer.exceptions import ModelUnavailableError, describe

logger = logging.getLogger("sktransfer")


def _local_hint() -> str:
    return offline_hint(
        "sentence", "To use a model you have on disk, pass TextEmbedder(model='/path/to/folder') "
        "with a folder saved by SentenceTransformer.save().", "models")


@dataclass
class SentenceBackbone:
    """A loaded SentenceTransformer in eval mode, plus what describes it."""

    name: str
    model: Any
    license: str
    digest: str
    device: str
    source: str = ""

    precision_checks: dict[str, float] = field(default_factory=dict, repr=False)
    _unnormalized: Any = field(default=None, repr=False)

    modality: ClassVar[str] = "text"

    def precision_cosine(self, precision: str) -> float:
        """The smallest cosine between this model's embeddings of ``PROBE_TEXTS`` at
        ``precision`` and at float32."""
        return min_cosine(*(self.encode(PROBE_TEXTS, batch_size=len(PROBE_TEXTS),
                                        normalize=True, precision=each)
                            for each in ("float32", precision)))

    @property
    def n_features(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        return int(getter())

    @property
    def max_seq_length(self) -> int | None:
        length = self.model.max_seq_length
        return None if length is None else int(length)

    def output_dims(self, layers: Layers = (None,), pooling: str = "mean") -> list[int]:
        """Text models have one output: the sentence embedding."""
        return [self.n_features for _ in layers]

    def encode(self, texts: list[str], *, batch_size: int, normalize: bool,
               precision: str) -> np.ndarray:
        """Embed texts (see :meth:`encode_batches`) into one float32 array."""
        out = np.empty((len(texts), self.n_features), dtype=np.float32)
        for positions, vectors in self.encode_batches(texts, batch_size=batch_size,
                                                      normalize=normalize,
                                                      precision=precision):
            out[positions] = vectors
        return out

    def encode_batches(self, texts: list[str], *, batch_size: int, normalize: bool,
                       precision: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Embed texts, each padded to a fixed bucket of its own length, so that its vector
        does not depend on the other texts of its batch; yields ``(positions, vectors)`` as
        each forward batch finishes (a caller can store it at once).

        Measured on MiniLM in bfloat16: with the padded length fixed, a text's vector is
        bit-identical alone and in any batch; padded to the longest text of its batch (what
        ``SentenceTransformer.encode`` does), it moves by up to 9.7e-4
        (``python benchmarks/text_buckets.py``). Texts are grouped by
        bucket (their token count rounded up to a multiple of ``PAD_MULTIPLE``) and batched
        within a group. In reduced precision every batch also has exactly ``batch_size``
        rows (a short one is filled with copies of its last text, whose outputs are dropped):
        oneDNN picks its bfloat16 matrix kernels by the number of rows, and on an Intel Xeon
        with AMX a text's vector came out up to 9e-4 apart alone and in a batch of 2 to 6.
        ``normalize=False`` skips the model's own Normalize module too.
        """
        model = self.model if normalize else self._without_normalize()
        model.eval()
        with inference(self.device, precision):
            features = tokenize(model, texts)
            if not _paddable(features):  # not a plain token model: its own encode
                yield np.arange(len(texts)), self._encode_plainly(model, texts, batch_size,
                                                                   normalize)
                return
            lengths = features["attention_mask"].sum(dim=1)
            widest = max(int(lengths.max()), model.max_seq_length or 0)
            buckets = torch.clamp((lengths + PAD_MULTIPLE - 1) // PAD_MULTIPLE * PAD_MULTIPLE,
                                  max=widest)
            features = _pad_to(features, int(buckets.max()), self._pad_id(model))
            for bucket in torch.unique(buckets).tolist():
                rows = torch.nonzero(buckets == bucket).flatten()
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start:start + batch_size]
                    taken = chunk
                    if precision != "float32" and len(chunk) < batch_size:
                        taken = torch.cat([chunk, chunk[-1:].expand(batch_size - len(chunk))])
                    batch = {key: value[taken, :bucket].to(self.device)
                             if isinstance(value, torch.Tensor) else value
                             for key, value in features.items()}
                    vectors = model(batch)["sentence_embedding"][:len(chunk)].float()
                    if normalize:
                        vectors = torch.nn.functional.normalize(vectors, dim=1)
                    yield chunk.numpy(), vectors.cpu().numpy()

    @staticmethod
    def _pad_id(model: Any) -> int:
        tokenizer = getattr(model, "tokenizer", None)
        return int(getattr(tokenizer, "pad_token_id", None) or 0)

    def _encode_plainly(self, model: Any, texts: list[str], batch_size: int,
                        normalize: bool) -> np.ndarray:
        out = model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize,
                           show_progress_bar=False, convert_to_numpy=False,
                           convert_to_tensor=True)
        return np.asarray(out.float().cpu().numpy())

    def _without_normalize(self) -> Any:
        """The model's modules up to its final Normalize (the same module objects, no copy).

        Many sentence-transformers models (MiniLM among them) end in a Normalize module, so
        ``normalize_embeddings=False`` alone would still return unit vectors.
        """
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.models import Normalize

        modules = list(self.model)
        if not modules or not isinstance(modules[-1], Normalize):
            return self.model
        if self._unnormalized is None:
            self._unnormalized = SentenceTransformer(modules=modules[:-1], device=self.device)
        return self._unnormalized

    def trainable(self, n_classes: int, *, max_length: int | None = None) -> Trainable:
        """A private copy with a linear head on the sentence embedding; groups are the word
        embeddings and each transformer layer, bottom to top."""
        encoder = copy.deepcopy(self.model).cpu()  # the shared frozen copy stays untouched
        if max_length is not None:
            encoder.max_seq_length = max_length  # the tokenizer truncates there
        net = SentenceClassifier(encoder, self.n_features, n_classes)
        transformer = encoder[0].auto_model
        groups = [list(transformer.embeddings.parameters())]
        groups += [list(layer.parameters()) for layer in transformer.encoder.layer]
        for parameter in encoder.parameters():
            parameter.requires_grad_(False)
        staged = net.split(groups, PROBE_TEXTS)
        if not staged:
            logger.debug("%s: no split at its layers; frozen layers below the trainable "
                         "ones run every epoch", self.name)
        return Trainable(net, groups, list(net.head.parameters()),
                         stages=net if staged else None)


PAD_MULTIPLE = 8  # bucket width in tokens: at most 7 padding tokens per text
# What a model's reduced precision is checked on: short and long, several languages, digits
# and symbols, the kinds of text that part precisions first.
PROBE_TEXTS = [
    "A gripping, tender film.",
    "Dull and far too long.",
    "ok",
    "The cinematography is stunning, but the plot meanders through two hours of cliches, "
    "and the ending, which should have been the emotional payoff, lands with a thud; even "
    "the fine supporting cast cannot rescue a script this tired.",
    "Battery lasts 2-3 days; charger (USB-C, 65 W) sold separately. 4/5 stars.",
    "Ein wunderbarer Film über Freundschaft.",
    "Le service était lent, mais la cuisine excellente.",
    "What a waste of a great cast!!!",
]


def tokenize(model: Any, texts: list[str]) -> dict[str, Any]:
    """The model's input features for ``texts`` (``preprocess`` in sentence-transformers 5+,
    ``tokenize`` before it)."""
    prepare = getattr(model, "preprocess", None) or model.tokenize
    return dict(prepare(texts))


def _pad_to(features: dict[str, Any], width: int, pad_id: int) -> dict[str, Any]:
    """Right-pad token ids (with ``pad_id``) and masks (with 0) to ``width`` tokens."""
    padded = {}
    for key, value in features.items():
        if not isinstance(value, torch.Tensor):  # e.g. sentence-transformers' "modality"
            padded[key] = value
            continue
        missing = width - value.shape[1]
        fill = pad_id if key == "input_ids" else 0
        padded[key] = torch.nn.functional.pad(value, (0, missing), value=fill) \
            if missing > 0 else value
    return padded


def _paddable(features: dict[str, Any]) -> bool:
    """Token ids and masks (plus plain settings), padded on the right: safe to re-pad."""
    tensors = [value for value in features.values() if isinstance(value, torch.Tensor)]
    return ("attention_mask" in features and "input_ids" in features
            and all(value.ndim == 2 for value in tensors)
            and all(isinstance(value, (torch.Tensor, str)) for value in features.values()))


class SentenceClassifier(torch.nn.Module):
    """A sentence-transformers encoder with a linear head on its sentence embedding."""

    def __init__(self, encoder: Any, n_features: int, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(n_features, n_classes)
        self._layers: list[Any] = []

    def embed(self, texts: list[str]) -> Any:
        device = self.head.weight.device
        features = {key: to_device(value, device) if isinstance(value, torch.Tensor) else value
                    for key, value in tokenize(self.encoder, texts).items()}
        return self.encoder(features)["sentence_embedding"]

    def classify(self, features: Any) -> Any:
        """Logits from ``embed``'s features."""
        return self.head(features)

    def forward(self, texts: list[str]) -> Any:
        return self.classify(self.embed(texts))

    # ---- the encoder as a chain of stages, one per layer group (see Stages) -------------
    # Boundary 0 is the texts; boundary i > 0 is the hidden states entering layer i - 1,
    # with the attention mask: (hidden (B, T, H), mask (B, T)). A BERT-style encoder
    # (``embeddings``, ``encoder.layer``, ``_create_attention_masks``) splits; any other
    # does not, and trains whole.
    @property
    def n_stages(self) -> int:
        return len(self._layers) + 1 if self._layers else 0

    def split(self, groups: list[list[Any]], probe: list[str]) -> bool:
        """Split at the groups (embeddings, then each layer) if each stage owns exactly its
        group's parameters and the chain gives ``embed`` on ``probe``."""
        model = self.encoder[0].auto_model
        layers = list(getattr(getattr(model, "encoder", None), "layer", []))
        if (not layers or not hasattr(model, "embeddings") or len(groups) != len(layers) + 1
                or not hasattr(model, "_create_attention_masks")):
            return False
        owners = [model.embeddings, *layers]
        if any({id(p) for p in owner.parameters()} != {id(p) for p in group}
               for owner, group in zip(owners, groups, strict=True)):
            return False
        self._layers = layers
        try:
            with evaluating(self), torch.no_grad():
                whole = self.embed(probe)
                chained = self.embed_from(self.run_stages(probe, 0, 1), 1)
            same = whole.shape == chained.shape and bool(
                torch.allclose(whole, chained, rtol=1e-4, atol=1e-5))
        except (TypeError, ValueError, AttributeError, RuntimeError):  # another interface
            same = False
        if not same:
            self._layers = []
        return same

    def run_stages(self, x: Any, start: int, stop: int) -> Any:
        model = self.encoder[0].auto_model
        for stage in range(start, stop):
            if stage == 0:
                device = self.head.weight.device
                features = {key: to_device(value, device) for key, value in
                            tokenize(self.encoder, x).items()
                            if isinstance(value, torch.Tensor)}
                hidden = model.embeddings(input_ids=features["input_ids"],
                                          token_type_ids=features.get("token_type_ids"))
                x = (hidden, features["attention_mask"])
            else:
                hidden, mask = x
                extended = model._create_attention_masks(**_mask_arguments(
                    model._create_attention_masks, mask, hidden))[0]
                out = self._layers[stage - 1](hidden, extended)
                x = (out[0] if isinstance(out, tuple) else out, mask)
        return x

    def embed_from(self, x: Any, start: int) -> Any:
        hidden, mask = self.run_stages(x, start, self.n_stages)
        features = {"token_embeddings": hidden, "attention_mask": mask}
        for module in list(self.encoder)[1:]:  # pooling, then normalisation if any
            features = module(features)
        return features["sentence_embedding"]

    def stage_modules(self, index: int) -> list[Any]:
        model = self.encoder[0].auto_model
        return [model.embeddings] if index == 0 else [self._layers[index - 1]]

    def storable(self, boundary: int) -> bool:
        return boundary > 0

    def rows(self, x: Any) -> list[Any]:
        hidden, mask = x
        keep = mask.bool().cpu()
        hidden = hidden.cpu()
        return [hidden[i][keep[i]] for i in range(len(hidden))]

    def collate(self, rows: list[Any], device: str) -> Any:
        width = max(len(r) for r in rows)
        hidden = torch.zeros((len(rows), width, rows[0].shape[-1]), dtype=rows[0].dtype)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            hidden[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return to_device(hidden, device), to_device(mask, device)


def _mask_arguments(create: Any, mask: Any, hidden: Any) -> dict[str, Any]:
    """Arguments of a transformers model's ``_create_attention_masks`` for an encoder pass:
    the padding mask and the embeddings, None for the rest (no cross-attention, no cache;
    transformers 5.25 added ``position_ids``). The split's check on the probe texts catches
    a version whose masks this does not build right."""
    import inspect

    known = {"attention_mask": mask, "embedding_output": hidden}
    return {name: known.get(name) for name in inspect.signature(create).parameters
            if name != "self"}


def get_sentence_backbone(model: str, device: str, trust_remote_code: bool) -> SentenceBackbone:
    """The shared backbone for (model, device), loaded at most once per process."""
    return load_once(("sentence", model, device, trust_remote_code),
                     lambda: _load(model, device, trust_remote_code))


def _load(model: str, device: str, trust_remote_code: bool) -> SentenceBackbone:
    from sentence_transformers import SentenceTransformer

    spec = get_backbone_spec(model, "sentence")
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
        try:
            net = SentenceTransformer(str(folder), device=device,
                                      trust_remote_code=trust_remote_code, local_files_only=True)
        except ModelUnavailableError:
            raise
        except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError,
                KeyError) as error:
            raise ValueError(_unreadable_folder(folder, error)) from None
    net.eval()
    return SentenceBackbone(
        name=model,
        model=net,
        license=license_ or _license_from_card(folder),
        digest=weights_digest(net),
        device=device,
        source=str(folder.resolve()),
    )


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _unreadable_folder(folder: Path, error: BaseException) -> str:
    """Why a sentence-transformers folder cannot be loaded, naming its weights file."""
    files = [folder / name for name in _WEIGHT_FILES if (folder / name).is_file()]
    named = ", ".join(f"{path} ({path.stat().st_size} bytes)" for path in files) or \
        f"no {' or '.join(_WEIGHT_FILES)}"
    cause = describe(error)
    if isinstance(error, pickle.UnpicklingError):
        cause = ("a weights file holds more than tensors, and it is never unpickled "
                 f"(torch.load(weights_only=True) refused it: {cause}); re-save the model "
                 "with SentenceTransformer.save(), which writes safetensors")
    return f"cannot load the sentence-transformers model in {folder} (weights: {named}): {cause}"


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
