"""Write docs/api.md from the public docstrings: python docs/gen_api.py

tests/test_docs.py checks that the committed file matches, so the reference cannot rot.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

SECTIONS = {
    "Embedders": ["sktransfer.ImageEmbedder", "sktransfer.TextEmbedder"],
    "Models": ["sktransfer.list_models", "sktransfer.backbones.register_backbone",
               "sktransfer.backbones.BackboneSpec"],
    "Caching and scale-out": ["sktransfer.FeatureCache", "sktransfer.dask.embed"],
    "Diagnostics": ["sktransfer.diagnostics.transfer_report",
                    "sktransfer.diagnostics.TransferReport",
                    "sktransfer.diagnostics.layer_sweep", "sktransfer.diagnostics.LayerSweep",
                    "sktransfer.diagnostics.domain_shift", "sktransfer.diagnostics.DomainShift",
                    "sktransfer.diagnostics.CORAL", "sktransfer.diagnostics.DownsampledPixels",
                    "sktransfer.diagnostics.ColorHistogram"],
    "Fine-tuning": ["sktransfer.FineTunedImageClassifier", "sktransfer.FineTunedTextClassifier",
                    "sktransfer.FineTunedImageRegressor", "sktransfer.FineTunedTextRegressor",
                    "sktransfer.FineTunedImageEmbedder", "sktransfer.FineTunedTextEmbedder"],
    "DataFrames": ["sktransfer.compose.make_embedding_transformer",
                   "sktransfer.compose.WithMissingIndicator"],
    "Datasets": ["sktransfer.datasets.load_elpv", "sktransfer.datasets.load_rotten_tomatoes"],
    "Errors and warnings": ["sktransfer.InputError", "sktransfer.ModelUnavailableError",
                            "sktransfer.WeightsMismatchError", "sktransfer.NonFiniteOutputError",
                            "sktransfer.CacheError", "sktransfer.EmbeddingWarning",
                            "sktransfer.TrainingDivergedError", "sktransfer.LicenseWarning",
                            "sktransfer.WeightsReinterpretedWarning"],
}


def resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def render() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand.", ""]
    for section, names in SECTIONS.items():
        lines += [f"## {section}", ""]
        for dotted in names:
            obj = resolve(dotted)
            kind = "class" if inspect.isclass(obj) else "function"
            lines += [f"### `{dotted}`", "", "```text", f"{kind} {obj.__name__}{signature(obj)}",
                      "```", "", "```text", inspect.getdoc(obj) or "", "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    Path(__file__).with_name("api.md").write_text(render())
