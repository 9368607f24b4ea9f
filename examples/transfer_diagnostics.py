"""Transfer diagnostics on real data: does pretraining help, which layer, how shifted?

1. ELPV solar-cell images: EfficientNet-Lite0 (pretrained) against raw pixels, colour
   histograms and the same network with random weights; then every layer of the network.
2. Rotten Tomatoes review snippets: all-MiniLM-L6-v2 against TF-IDF, folds grouped by film.
3. Domain shift between mono- and poly-crystalline solar cells in the embedding space.

Run: python examples/transfer_diagnostics.py [--n-images N] [--n-texts N] [--figures DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sklearn.model_selection import GroupKFold, StratifiedKFold

from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer.datasets import load_elpv, load_rotten_tomatoes
from sktransfer.diagnostics import domain_shift, layer_sweep, transfer_report


def run(n_images: int = 1000, n_texts: int = 2000, figures: Path | None = None) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as cache:  # the sweep reuses the report's embeddings
        elpv = load_elpv(n_samples=n_images)
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        lite0 = ImageEmbedder(cache=cache)
        results["elpv"] = transfer_report(elpv.images, elpv.target,
                                          {"EfficientNet-Lite0": lite0}, cv=folds)
        results["layers"] = layer_sweep(elpv.images, elpv.target, lite0, cv=folds)
        mono = elpv.cell_type == "mono"
        results["shift"] = domain_shift(elpv.images[mono], elpv.images[~mono], lite0)

    reviews = load_rotten_tomatoes(n_samples=n_texts)
    results["reviews"] = transfer_report(list(reviews.text), reviews.target,
                                         {"all-MiniLM-L6-v2": TextEmbedder()},
                                         cv=GroupKFold(5), groups=reviews.movie)
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        for name in ("elpv", "layers", "reviews"):
            axes = results[name].plot()
            axes.figure.tight_layout()
            axes.figure.savefig(figures / f"diagnostics_{name}.png", dpi=90)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--n-texts", type=int, default=2000)
    parser.add_argument("--figures", type=Path, default=None, help="save the plots here")
    args = parser.parse_args()
    results = run(args.n_images, args.n_texts, args.figures)
    print(f"ELPV, {args.n_images} images, 5-fold balanced accuracy\n{results['elpv']}\n")
    print(f"ELPV, every layer of EfficientNet-Lite0\n{results['layers']}\n")
    print(f"Mono vs poly cells in EfficientNet-Lite0's embedding space\n{results['shift']}\n")
    print(f"Rotten Tomatoes, {args.n_texts} snippets, 5 folds grouped by film\n"
          f"{results['reviews']}")


if __name__ == "__main__":
    main()
