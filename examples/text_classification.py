"""Fresh or rotten? Review snippets with a pretrained sentence model vs TF-IDF.

Rotten Tomatoes snippets (shipped in a PyPI package), cross-validated with folds grouped by
film so that no film is on both sides. Both models are logistic regressions; only the
features differ.

Run: python examples/text_classification.py [--n-samples N]
"""

from __future__ import annotations

import argparse
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from sktransfer import TextEmbedder
from sktransfer.datasets import load_rotten_tomatoes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2000)
    args = parser.parse_args()
    reviews = load_rotten_tomatoes(n_samples=args.n_samples)
    models = {
        "TF-IDF (1-2 grams) + logistic regression": make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            LogisticRegression(max_iter=2000)),
        "all-MiniLM-L6-v2 + logistic regression": make_pipeline(
            TextEmbedder(), LogisticRegression(max_iter=2000)),
    }
    print(f"Rotten Tomatoes, {len(reviews.text)} snippets, 5 folds grouped by film")
    for name, model in models.items():
        start = time.perf_counter()
        scores = cross_val_score(model, reviews.text, reviews.target, groups=reviews.movie,
                                 cv=GroupKFold(5), scoring="accuracy")
        print(f"{name:44} accuracy {scores.mean():.3f} ± {scores.std():.3f} "
              f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
