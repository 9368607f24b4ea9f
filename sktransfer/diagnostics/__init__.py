"""Transfer diagnostics: does pretraining help here, which layer, how shifted is my data.

- :func:`transfer_report`: candidates against cheap baselines on the same CV splits, with a
  paired test per candidate and a verdict (positive, neutral, negative transfer).
- :func:`layer_sweep`: every requested layer of one image backbone scored, one forward pass.
- :func:`domain_shift`: domain-classifier AUC (proxy A-distance) and MMD with a permutation test.
- :class:`CORAL`: correlation alignment of source features to a target domain.
- :class:`DownsampledPixels`, :class:`ColorHistogram`: cheap image baselines as transformers.
"""

from sktransfer.diagnostics._baselines import ColorHistogram, DownsampledPixels
from sktransfer.diagnostics._coral import CORAL
from sktransfer.diagnostics._layers import LayerSweep, layer_sweep
from sktransfer.diagnostics._report import TransferReport, transfer_report
from sktransfer.diagnostics._shift import DomainShift, domain_shift

__all__ = [
    "CORAL",
    "ColorHistogram",
    "DomainShift",
    "DownsampledPixels",
    "LayerSweep",
    "TransferReport",
    "domain_shift",
    "layer_sweep",
    "transfer_report",
]
