"""Reading a checkpoint and fitting it to a timm network: the backbone strictly, the head not
at all.

An embedder throws the classifier away, so a checkpoint is accepted with its head, without it,
or with a head of another size (a fine-tuned model); the head's tensors are logged and
ignored. Every backbone tensor must be there with its shape. When they are not, timm's own
converter for the architecture (its ``checkpoint_filter_fn``) is tried, and anything it
changes (renamed layouts, resampled position embeddings) is announced by a warning. Otherwise
the error is a short summary: how many tensors matched, the first few names on each side, and
a hint when the names look like another library's layout.
"""

from __future__ import annotations

import inspect
import logging
import math
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from sktransfer.exceptions import WeightsReinterpretedWarning, describe

logger = logging.getLogger("sktransfer")

_SHOWN = 3  # names shown per list in a mismatch error
_FILTERS = ("checkpoint_filter_fn", "_filter_fn", "_filter_torchvision_pretrained")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict from a safetensors file or a weights-only torch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: dict[str, Any] = load_file(str(path))
            return state
        except Exception as error:  # SafetensorError, OSError: both name no path
            raise ValueError(f"{path} is not a readable safetensors file "
                             f"({type(error).__name__}: {error})") from None
    if path.suffix == ".npz":
        raise ValueError(f"{path}: .npz (JAX) checkpoints are not supported; use the timm "
                         "safetensors release of the same model")
    checkpoint = load_torch_file(path)
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, dict) or not all(
            isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def load_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``, with every way the file can be unreadable
    (empty, truncated, not a torch file, a pickle of more than tensors) named."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds more than tensors, and sktransfer never unpickles arbitrary objects "
            f"(torch.load(weights_only=True) refused it: {describe(error)}). "
            "Re-save it with torch.save(model.state_dict(), ...) or as safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ValueError(
            f"{path} ({path.stat().st_size} bytes) is not a readable torch checkpoint: it may "
            f"be truncated (an interrupted download or copy) or another kind of file "
            f"({describe(error)})") from None


def drop_head(net: Any) -> set[str]:
    """Remove ``net``'s classifier (``reset_classifier(0)``) and return the state-dict names
    it had: the tensors of a checkpoint's head, whatever its number of classes."""
    before = set(net.state_dict())
    net.reset_classifier(0)
    return before - set(net.state_dict())


def checkpoint_img_size(net: Any, state: dict[str, Any]) -> int | None:
    """The square input size a ViT-style checkpoint was trained at, when its position
    embeddings say so and it differs from ``net``'s; None otherwise."""
    theirs, ours = state.get("pos_embed"), getattr(net, "pos_embed", None)
    patch_embed = getattr(net, "patch_embed", None)
    if not (isinstance(theirs, torch.Tensor) and isinstance(ours, torch.Tensor)
            and theirs.ndim == ours.ndim == 3 and theirs.shape != ours.shape
            and getattr(patch_embed, "num_patches", None)):
        return None
    assert patch_embed is not None  # it has num_patches
    extra = ours.shape[1] - patch_embed.num_patches  # class/register tokens in pos_embed
    side = math.isqrt(max(theirs.shape[1] - extra, 0))
    if side == 0 or side * side != theirs.shape[1] - extra:
        return None
    return side * int(patch_embed.patch_size[0])


def load_backbone_state(net: Any, state: dict[str, Any], *, head: set[str],
                        source: str) -> None:
    """Load ``state`` into the headless ``net``: every backbone tensor, no head tensor."""
    expected = {name: tuple(t.shape) for name, t in net.state_dict().items()}
    fitted, how = _fit(net, state, head, expected)
    ignored = sorted(name for name in state if name in head)
    if ignored:
        logger.info("%s: ignored the classifier head (%s); embedders use the features "
                    "before it", source, ", ".join(_shape(name, state) for name in ignored))
    if fitted is None:
        raise ValueError(_mismatch_message(net, state, head, expected, source))
    if how:
        warnings.warn(f"weights from {_short(source)} were reinterpreted to fit "
                      f"{_network(net)}: {how}", WeightsReinterpretedWarning, stacklevel=4)
    current = net.state_dict()
    _check_dtypes(fitted, current, source)
    fitted.update({name: current[name] for name in expected if name not in fitted})  # counters
    net.load_state_dict(fitted, strict=True)


def _check_dtypes(state: dict[str, Any], current: dict[str, Any], source: str) -> None:
    """Refuse tensors that are not floating point where the network's are (int8 weights would
    be copied as small whole numbers: silently wrong features); announce float tensors of
    another precision, which ``load_state_dict`` converts."""
    converted: dict[str, list[str]] = {}
    for name, tensor in state.items():
        wanted = current[name].dtype
        if not wanted.is_floating_point or tensor.dtype == wanted:
            continue
        if not tensor.dtype.is_floating_point:
            raise ValueError(
                f"weights from {_short(source)}: tensor {name!r} is stored as {tensor.dtype}, "
                f"not as floating point (the network's is {wanted}); quantized or integer "
                "checkpoints cannot be loaded: save the float weights "
                "(model.float().state_dict())")
        pair = f"{_dtype(tensor.dtype)} to {_dtype(wanted)}"
        converted.setdefault(pair, []).append(name)
    if converted:
        what = "; ".join(f"{len(names)} tensors from {pair} (first: {names[0]})"
                         for pair, names in converted.items())
        warnings.warn(f"weights from {_short(source)} are stored in another precision and "
                      f"were converted: {what}", WeightsReinterpretedWarning, stacklevel=5)


def _dtype(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _fit(net: Any, state: dict[str, Any], head: set[str],
         expected: dict[str, tuple[int, ...]]) -> tuple[dict[str, Any] | None, str]:
    """``state`` (without its head) made to fit ``expected``, and what had to change."""
    body = {k: v for k, v in state.items() if k not in head}
    if _fits(body, expected):
        return body, ""
    for prefix in sorted({name.split(".", 1)[0] + "." for name in body if "." in name}):
        # a wrapper's names (Lightning's "model.", "backbone.", "encoder."): the tensors
        # under one prefix that fit exactly are the backbone
        inner = {k.removeprefix(prefix): v for k, v in body.items() if k.startswith(prefix)}
        inner = {k: v for k, v in inner.items() if k not in head}
        if _fits(inner, expected):
            logger.info("checkpoint tensors under the prefix %r fit the network; %d others "
                        "ignored", prefix, len(body) - len(inner))
            return inner, ""
    converted = _timm_filter(net, state)
    if converted is None:
        return None, ""
    converted = {k: v for k, v in converted.items() if k not in head}
    if not _fits(converted, expected):
        return None, ""
    return converted, _what_changed(state, converted, head)


_COUNTER = "num_batches_tracked"  # BatchNorm's step counter: no effect on outputs


def _fits(state: dict[str, Any], expected: dict[str, tuple[int, ...]]) -> bool:
    """Every backbone tensor with its shape and nothing else (a BatchNorm step counter may
    be missing: some exporters drop it)."""
    expected = {k: v for k, v in expected.items() if not (k.endswith(_COUNTER) and k not in
                                                          state)}
    return state.keys() == expected.keys() and all(
        tuple(state[name].shape) == shape for name, shape in expected.items())


def _timm_filter(net: Any, state: dict[str, Any]) -> dict[str, Any] | None:
    """timm's converter of original layouts for ``net``'s architecture, applied; or None."""
    module = sys.modules.get(type(net).__module__)
    for name in _FILTERS:
        filter_fn = getattr(module, name, None)
        if filter_fn is None:
            continue
        arity = len(inspect.signature(filter_fn).parameters)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return dict(filter_fn(dict(state), net) if arity > 1 else filter_fn(dict(state)))
        except Exception as error:  # a converter for another layout: not this checkpoint's
            logger.debug("timm's %s.%s does not apply: %s", getattr(module, "__name__", module),
                         name, error)
    return None


def _what_changed(before: dict[str, Any], after: dict[str, Any], head: set[str]) -> str:
    before = {k: v for k, v in before.items() if k not in head}
    kept = before.keys() & after.keys()
    reshaped = [f"{name} resampled from {_dims(before[name])} to {_dims(after[name])}"
                for name in sorted(kept) if before[name].shape != after[name].shape]
    changes = []
    if reshaped:
        changes.append("; ".join(reshaped[:_SHOWN]) + " (the features differ from those of "
                       "the model as trained)")
    renamed = len(after.keys() - before.keys())
    if renamed:
        changes.append(f"{renamed} of {len(after)} tensors converted from another layout by "
                       "timm's checkpoint filter for this architecture")
    dropped = sorted(before.keys() - after.keys())
    if dropped and not renamed:
        changes.append(f"{len(dropped)} tensors dropped ({', '.join(dropped[:_SHOWN])})")
    return "; ".join(changes) or "timm's checkpoint filter changed values"


def _mismatch_message(net: Any, state: dict[str, Any], head: set[str],
                      expected: dict[str, tuple[int, ...]], source: str) -> str:
    body = {k: v for k, v in state.items() if k not in head}
    matched = [n for n, shape in expected.items() if n in body and tuple(body[n].shape) == shape]
    missing = [n for n in expected if n not in body]
    unexpected = sorted((n for n in body if n not in expected),
                        key=lambda n: n.endswith("num_batches_tracked"))  # weights first
    wrong = [f"{n} {_dims(body[n])} vs {_dims_of(shape)}" for n, shape in expected.items()
             if n in body and tuple(body[n].shape) != shape]
    parts = [f"weights from {_short(source)} do not fit {_network(net)}: "
             f"{len(matched)} of {len(expected)} backbone tensors matched"]
    for label, names in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", wrong)):
        if names:
            shown = ", ".join(_short(name, 60) for name in names[:_SHOWN])
            more = ", …" if len(names) > _SHOWN else ""
            parts.append(f"{len(names)} {label} ({shown}{more})")
    return "; ".join(parts) + ". " + _layout_hint(list(body), len(matched))


_LAYOUTS = (
    (re.compile(r"^(features\.\d+\.\d+\.|features\.\d+\.conv\.|layer\d\.\d+\.downsample\.)"),
     "torchvision's layout (for example 'features.0.0.weight'): timm has no converter for "
     "this architecture; load it with torchvision or rename the tensors to timm's names"),
    (re.compile(r"^(embeddings\.|encoder\.layer\.|vit\.|pooler\.)"),
     "Hugging Face transformers' layout ('embeddings.', 'encoder.layer.'): use the timm "
     "release of the model, or load it with transformers"),
    (re.compile(r"[/:]"), "a Keras/TensorFlow layout: export it to a timm architecture first"),
)


def _layout_hint(names: list[str], n_matched: int) -> str:
    for pattern, hint in _LAYOUTS:
        if sum(bool(pattern.search(name)) for name in names) >= max(1, len(names) // 10):
            return f"The names look like {hint}."
    firsts = {name.split(".", 1)[0] for name in names}
    if len(firsts) == 1 and all("." in name for name in names):
        prefix = f"{firsts.pop()}."
        return (f"Every name starts with {prefix!r}, and removing it does not make them fit: "
                "is it a checkpoint of another architecture?")
    if n_matched == 0:
        return "No name matches: is it a checkpoint of another architecture?"
    return "Is it a checkpoint of another variant (depth, width) of this architecture?"


def _network(net: Any) -> str:
    architecture = (getattr(net, "pretrained_cfg", None) or {}).get("architecture")
    return f"{architecture} ({type(net).__name__})" if architecture else type(net).__name__


def _dims(tensor: Any) -> str:
    return _dims_of(tuple(tensor.shape))


def _dims_of(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape) or "scalar"


def _shape(name: str, state: dict[str, Any]) -> str:
    return f"{name} {_dims(state[name])}"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit // 2 - 1]}…{text[-(limit // 2):]}"
