"""Frozen features or fine-tuning? ELPV defects at two training-set sizes, same splits.

For each training-set size, the same stratified train/test split is used by both methods:

- frozen: EfficientNet-Lite0 features (pretrained, packaged) + logistic regression;
- fine-tuned: FineTunedImageClassifier on the same network — the same logistic regression as
  its starting point (epoch 0), then layer groups unfrozen from the top, every epoch scored on
  a validation split and the best kept (benchmarks/finetune.py runs this and more).

Run: python examples/finetune_vs_frozen.py [--sizes 150 500] [--n-test N] [--max-epochs E]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import ImageEmbedder
from sktransfer.datasets import load_elpv
from sktransfer.finetune import FineTunedImageClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 500])
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--max-epochs", type=int, default=16)
    args = parser.parse_args()
    elpv = load_elpv()
    rest, test = train_test_split(np.arange(len(elpv.target)), test_size=args.n_test,
                                  stratify=elpv.target, random_state=0)
    X_test, y_test = elpv.images[test], elpv.target[test]
    print(f"ELPV defect detection: balanced accuracy on the same {args.n_test} held-out cells")
    print(f"{'train size':>10}  {'frozen + logistic':>18}  {'fine-tuned':>11}  "
          f"{'frozen s':>8}  {'fine-tune s':>11}  best epoch")
    for size in args.sizes:
        train, _ = train_test_split(rest, train_size=size, stratify=elpv.target[rest],
                                    random_state=size)
        X_train, y_train = elpv.images[train], elpv.target[train]

        start = time.perf_counter()
        frozen = make_pipeline(ImageEmbedder(), StandardScaler(),
                               LogisticRegression(C=0.01, max_iter=3000,
                                                  class_weight="balanced")).fit(X_train, y_train)
        frozen_score = balanced_accuracy_score(y_test, frozen.predict(X_test))
        frozen_s = time.perf_counter() - start

        start = time.perf_counter()
        tuned = FineTunedImageClassifier(max_epochs=args.max_epochs, patience=args.max_epochs,
                                         class_weight="balanced",
                                         random_state=0).fit(X_train, y_train)
        tuned_score = balanced_accuracy_score(y_test, tuned.predict(X_test))
        tuned_s = time.perf_counter() - start
        print(f"{size:>10}  {frozen_score:>18.3f}  {tuned_score:>11.3f}  {frozen_s:>8.0f}  "
              f"{tuned_s:>11.0f}  {tuned.best_epoch_} of {len(tuned.history_) - 1}")


if __name__ == "__main__":
    main()
