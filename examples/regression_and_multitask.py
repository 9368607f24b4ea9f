"""Real values and several tasks at once: ELPV solar cells, defect probability and cell type.

Three models on the same train/test split of packaged ELPV images:

- frozen EfficientNet-Lite0 features + RidgeCV for the defect probability (0, 1/3, 2/3, 1);
- FineTunedImageRegressor on the same network: the same ridge regression as epoch 0, then
  layer groups unfrozen from the top; predictions in the units of y;
- a multitask FineTunedImageEmbedder fine-tuned on both tasks at once (the probability as a
  regression, the cell type as a classification, one head each on one network), whose
  features then feed a RidgeCV and a logistic regression.

Run: python examples/regression_and_multitask.py [--n-samples N] [--max-epochs E]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import balanced_accuracy_score, mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import ImageEmbedder
from sktransfer.datasets import load_elpv
from sktransfer.finetune import FineTunedImageEmbedder, FineTunedImageRegressor


def rmse(y, predicted) -> float:
    return float(np.sqrt(mean_squared_error(y, predicted)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--max-epochs", type=int, default=8)
    args = parser.parse_args()
    elpv = load_elpv(n_samples=args.n_samples)
    X, probability = elpv.images, elpv.defect_probability.astype(float)
    cell_type = np.asarray(elpv.cell_type)
    train, test = train_test_split(np.arange(len(X)), test_size=0.3, random_state=0,
                                   stratify=elpv.target)
    print(f"ELPV, {len(train)} training and {len(test)} test cells")

    ridge = make_pipeline(ImageEmbedder(), StandardScaler(), RidgeCV(np.logspace(-3, 5, 17)))
    ridge.fit(X[train], probability[train])
    print(f"defect probability, RMSE: frozen + RidgeCV "
          f"{rmse(probability[test], ridge.predict(X[test])):.4f}")
    regressor = FineTunedImageRegressor(max_epochs=args.max_epochs, random_state=0)
    regressor.fit(X[train], probability[train])
    r2 = regressor.score(X[test], probability[test])
    print(f"defect probability, RMSE: FineTunedImageRegressor "
          f"{rmse(probability[test], regressor.predict(X[test])):.4f} "
          f"(epoch {regressor.best_epoch_} kept, R² {r2:.3f})")

    tasks = pd.DataFrame({"defect_probability": probability, "cell_type": cell_type})
    embedder = FineTunedImageEmbedder(max_epochs=args.max_epochs, random_state=0)
    embedder.fit(X[train], tasks.iloc[train])
    print(f"multitask embedder, tasks: {embedder.tasks_}")
    features_train, features_test = embedder.transform(X[train]), embedder.transform(X[test])
    on_features = make_pipeline(StandardScaler(), RidgeCV(np.logspace(-3, 5, 17)))
    on_features.fit(features_train, probability[train])
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    logistic.fit(features_train, cell_type[train])
    print(f"multitask features: defect probability RMSE "
          f"{rmse(probability[test], on_features.predict(features_test)):.4f}, cell type "
          f"balanced accuracy "
          f"{balanced_accuracy_score(cell_type[test], logistic.predict(features_test)):.3f}")


if __name__ == "__main__":
    main()
