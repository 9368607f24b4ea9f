"""Unsupervised transfer: do pretrained embeddings group solar cells by kind, without labels?

KMeans with two clusters on ELPV images, from pretrained EfficientNet-Lite0 features (the
pooled output, and stage 4, the layer that transfers best in examples/transfer_diagnostics.py),
from the same network with random weights, and from raw pixels. Every feature set is
L2-normalised first (cosine geometry, as usual for embeddings). The clusters are compared with
the cell type (mono- or poly-crystalline), which no model saw: adjusted Rand index (1 = the
clusters are exactly the cell types, 0 = chance).

Run: python examples/clustering.py [--n-samples N]
"""

from __future__ import annotations

import argparse

from PIL import Image
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from sktransfer import ImageEmbedder
from sktransfer.datasets import load_elpv


def pixels(images, side=64):
    import numpy as np

    return np.stack([np.asarray(Image.fromarray(i).resize((side, side))) for i in images]
                    ).reshape(len(images), -1) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=800)
    args = parser.parse_args()
    elpv = load_elpv(n_samples=args.n_samples)
    features = {
        "pretrained EfficientNet-Lite0": ImageEmbedder().fit_transform(elpv.images),
        "pretrained, stage 4": ImageEmbedder(layer=4).fit_transform(elpv.images),
        "same network, random weights": ImageEmbedder(weights="random").fit_transform(
            elpv.images),
        "raw pixels 64×64": pixels(elpv.images),
    }
    print(f"ELPV, {len(elpv.images)} cells: KMeans(2) clusters vs cell type (mono/poly)")
    for name, X in features.items():
        clusters = make_pipeline(Normalizer(), KMeans(n_clusters=2, n_init=10, random_state=0)
                                 ).fit_predict(X)
        print(f"{name:32} adjusted Rand index {adjusted_rand_score(elpv.cell_type, clusters):.3f}")


if __name__ == "__main__":
    main()
