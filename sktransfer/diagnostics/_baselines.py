"""Cheap image baselines as scikit-learn transformers (no network, no weights)."""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from sktransfer._decode import load_image
from sktransfer._images import decoded_batches
from sktransfer._input import check_input_shape
from sktransfer.modality import IMAGES

_BATCH = 64


class _ImageFeatures(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Decode each image (same rules as ImageEmbedder) and compute a fixed-size vector."""

    learns_nothing = True  # fit records settings only: features can be computed once

    def fit(self, X: Any, y: Any = None) -> _ImageFeatures:
        """Check the parameters and that X holds images (nothing is learned)."""
        self._validate_params()
        self._items(X, reset=True)
        self.n_features_out_ = self._width()
        return self

    def _items(self, X: Any, *, reset: bool) -> list[Any]:
        items = IMAGES.items(X)
        check_input_shape(self, X, reset=reset)
        return items

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        items = self._items(X, reset=False)
        out = np.empty((len(items), self._width()), dtype=np.float32)
        for positions, features, _ in decoded_batches(
                lambda position: self._features(load_image(items[position])),
                range(len(items)), range(len(items)), batch_size=_BATCH, workers=1,
                on_error="raise"):
            out[positions] = features
        return out


class DownsampledPixels(_ImageFeatures):
    """Images shrunk to ``size`` × ``size`` grey pixels in [0, 1]: the cheapest baseline.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.diagnostics import DownsampledPixels
    >>> DownsampledPixels(size=8).fit_transform(np.zeros((2, 30, 30), dtype=np.uint8)).shape
    (2, 64)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "size": [Interval(Integral, 1, None, closed="left")]}

    def __init__(self, size: int = 32):
        self.size = size

    def _width(self) -> int:
        return self.size * self.size

    def _features(self, image: Any) -> np.ndarray:
        from PIL import Image

        small = image.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return np.asarray(small, dtype=np.float32).ravel() / 255.0


class ColorHistogram(_ImageFeatures):
    """Per-channel intensity histograms (``bins`` per channel, each summing to 1).

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.diagnostics import ColorHistogram
    >>> ColorHistogram(bins=4).fit_transform([np.zeros((5, 5, 3), dtype=np.uint8)])
    array([[1., 0., 0., 0., 1., 0., 0., 0., 1., 0., 0., 0.]], dtype=float32)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "bins": [Interval(Integral, 2, 256, closed="both")]}

    def __init__(self, bins: int = 16):
        self.bins = bins

    def _width(self) -> int:
        return 3 * self.bins

    def _features(self, image: Any) -> np.ndarray:
        pixels = np.asarray(image).reshape(-1, 3)
        edges = np.linspace(0, 256, self.bins + 1)
        return np.concatenate([np.histogram(pixels[:, c], bins=edges)[0] for c in range(3)]
                              ) / len(pixels)
