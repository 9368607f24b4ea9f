"""Images and a tabular column together: ELPV solar cells and their cell type.

make_embedding_transformer builds one ColumnTransformer for a DataFrame holding image paths
and the mono/poly cell type; it is compared, on the same folds, with the image alone and the
cell type alone. A shared feature cache means each image is embedded once for all models.

Run: python examples/tabular_plus_image.py [--n-samples N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import ImageEmbedder
from sktransfer.compose import make_embedding_transformer
from sktransfer.datasets import load_elpv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=800)
    args = parser.parse_args()
    elpv = load_elpv(n_samples=args.n_samples)
    with tempfile.TemporaryDirectory() as work:
        paths = []
        for i, image in enumerate(elpv.images):  # the usual layout: image files on disk
            paths.append(str(Path(work) / f"cell{i:04d}.png"))
            Image.fromarray(image).save(paths[-1])
        frame = pd.DataFrame({"image": paths, "cell_type": elpv.cell_type})
        embedder = ImageEmbedder(cache=Path(work) / "cache")
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        head = LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced")
        candidates = {
            "cell type only": make_embedding_transformer(frame[["cell_type"]]),
            "image only": make_embedding_transformer(frame[["image"]], image_embedder=embedder),
            "image + cell type": make_embedding_transformer(frame, image_embedder=embedder),
        }
        print(f"ELPV defect detection, {len(frame)} cells, 5-fold balanced accuracy")
        for name, columns in candidates.items():
            data = frame[[c for c, _, _ in columns.transformers]]
            scores = cross_val_score(make_pipeline(columns, StandardScaler(), head), data,
                                     elpv.target,
                                     cv=folds, scoring="balanced_accuracy")
            print(f"{name:20} {scores.mean():.3f} ± {scores.std():.3f}")


if __name__ == "__main__":
    main()
