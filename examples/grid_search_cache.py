"""Choose the model and the layer by grid search, embedding each image once per setting.

GridSearchCV over the backbone's layer, its weights (pretrained or random) and the
regularisation of the logistic regression, on ELPV. With a feature cache, every
(image, model, layer) is embedded once no matter how many folds and values of C use it.

Run: python examples/grid_search_cache.py [--n-samples N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import FeatureCache, ImageEmbedder
from sktransfer.datasets import load_elpv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=600)
    args = parser.parse_args()
    elpv = load_elpv(n_samples=args.n_samples)
    with tempfile.TemporaryDirectory() as folder:
        pipe = Pipeline([
            ("embed", ImageEmbedder(cache=folder)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=3000, class_weight="balanced")),
        ])
        grid = {"embed__weights": ["pretrained", "random"], "embed__layer": [3, 4, None],
                "clf__C": [0.003, 0.03]}
        start = time.perf_counter()
        search = GridSearchCV(pipe, grid, cv=StratifiedKFold(4, shuffle=True, random_state=0),
                              scoring="balanced_accuracy").fit(elpv.images, elpv.target)
        seconds = time.perf_counter() - start
        n_fits = 4 * len(search.cv_results_["params"]) + 1
        stored = len(FeatureCache(folder))
    print(f"ELPV, {len(elpv.images)} images: {len(search.cv_results_['params'])} settings x 4 "
          f"folds = {n_fits} fits in {seconds:.0f} s; {stored} vectors embedded "
          f"({stored // len(elpv.images)} settings of the embedder × {len(elpv.images)} images)")
    print(f"best: {search.best_params_}, balanced accuracy {search.best_score_:.3f}")
    results = search.cv_results_
    for params, mean, std in zip(results["params"], results["mean_test_score"],
                                 results["std_test_score"], strict=True):
        print(f"  {params['embed__weights']:10} layer {params['embed__layer']!s:4} "
              f"C={params['clf__C']:<6} {mean:.3f} ± {std:.3f}")


if __name__ == "__main__":
    main()
