"""Fine-tuned against frozen, on packaged data: the measurements behind docs/finetuning.md.

Tasks (each prints a table, with the seconds of every fit):

- ``elpv``: ELPV defects, one stratified split per training size (150, 500) and the same 500
  held-out cells (the protocol of examples/finetune_vs_frozen.py): frozen EfficientNet-Lite0
  + standardised, class-weighted logistic regression against FineTunedImageClassifier (16
  epochs, the last kept: the default), and the same keeping its best epoch instead
  (``early_stopping=True``, patience 16).
- ``embeddings``: HistGradientBoostingClassifier on frozen against fine-tuned embeddings
  (both PCA'd to the same width; the embedder trains 8 epochs), 5-fold stratified
  cross-validation on 300 ELPV cells.
- ``reviews``: Rotten Tomatoes, 2,000 snippets, GroupKFold by film: frozen MiniLM + logistic
  regression against FineTunedTextClassifier.
- ``imbalanced``: the same snippets resampled to 85% fresh / 15% rotten, one grouped split:
  class-weighted frozen + logistic regression against FineTunedTextClassifier with
  ``class_weight="balanced"``; every epoch's validation predictions are checked for collapse
  to one class.
- ``reuse``: what reusing the frozen features saves: head-only epochs with the features
  computed once against the frozen layers run every epoch (text, and images without
  augmentation), measured side by side.
- ``regression``: ELPV defect probability (0, 1/3, 2/3, 1), 500 cells, 5-fold: frozen
  EfficientNet-Lite0 + ``RidgeCV`` against ``FineTunedImageRegressor`` (its
  defaults), RMSE on the same folds.
- ``multitask``: ELPV 500, defect probability and cell type (mono/poly), the same folds
  (``--folds``, 5 by default): features from the multitask ``FineTunedImageEmbedder`` (both
  tasks at once), from a single-task embedder per task, and frozen, each then ``RidgeCV``
  for the probability (RMSE) and a logistic regression for the type (balanced accuracy).
- ``multilabel``: ELPV 500, "defective" and "mono" as two 0/1 labels of one
  ``FineTunedImageClassifier`` against one classifier per label, the same folds; balanced
  accuracy per label.
- ``reviews_multitask``: Rotten Tomatoes with plot synopses, 2,000 snippets, GroupKFold by
  film: "plot or review" for every snippet and sentiment for reviews only (missing for
  plots); the multitask ``FineTunedTextEmbedder`` against the single-task one (sentiment on
  reviews), each then a logistic regression, accuracy on the test reviews.
- ``crossfit``: the ``embeddings`` comparison with ``cv=3`` cross-fitting in the
  embedder's ``fit_transform`` against without, and frozen.
- ``never_lose``: the default classifier against frozen features on six packaged datasets,
  Fashion-MNIST held out of every choice, with every guard against negative transfer
  scored from the same fit per fold; ``benchmarks/never_lose.py`` has the details and can
  run one dataset at a time (3 folds unless ``--folds``).

What fine-tuning costs (seconds per epoch at each depth, the floor, whole fits against the
code before, the hand-written loop, setfit) is ``benchmarks/finetune_speed.py``.

Run: python benchmarks/finetune.py [TASK ...] [--quick] [--folds K]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import balanced_accuracy_score, mean_squared_error
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer.datasets import load_elpv, load_rotten_tomatoes
from sktransfer.finetune import (
    FineTunedImageClassifier,
    FineTunedImageEmbedder,
    FineTunedImageRegressor,
    FineTunedTextClassifier,
    FineTunedTextEmbedder,
)
from sktransfer.finetune.probe import RIDGE_ALPHAS

IMAGE_EPOCHS = 16
TEXT_EPOCHS = 3


def _frozen_logistic(embedder) -> object:
    return make_pipeline(embedder, StandardScaler(),
                         LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced"))


def _timed(fit):
    start = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - start


def _epochs(model) -> str:
    return f"{model.best_epoch_} of {len(model.history_) - 1}"


def elpv(quick: bool) -> None:
    data = load_elpv()
    rest, test = train_test_split(np.arange(len(data.target)), test_size=500,
                                  stratify=data.target, random_state=0)
    X_test, y_test = data.images[test], data.target[test]
    print("ELPV: balanced accuracy on the same 500 held-out cells")
    print("train size | frozen + logistic | fine-tuned | frozen s | fine-tune s | "
          "best epoch kept instead (early_stopping=True) | its kept epoch")
    for size in [150] if quick else [150, 500]:
        train, _ = train_test_split(rest, train_size=size, stratify=data.target[rest],
                                    random_state=size)
        X, y = data.images[train], data.target[train]
        frozen, frozen_s = _timed(lambda X=X, y=y: _frozen_logistic(ImageEmbedder()).fit(X, y))
        tuned, tuned_s = _timed(lambda X=X, y=y: FineTunedImageClassifier(
            max_epochs=2 if quick else IMAGE_EPOCHS, class_weight="balanced",
            random_state=0).fit(X, y))
        best = FineTunedImageClassifier(
            max_epochs=2 if quick else IMAGE_EPOCHS, early_stopping=True,
            patience=IMAGE_EPOCHS, class_weight="balanced", random_state=0).fit(X, y)
        print(f"{size} | {balanced_accuracy_score(y_test, frozen.predict(X_test)):.3f} | "
              f"{balanced_accuracy_score(y_test, tuned.predict(X_test)):.3f} | "
              f"{frozen_s:.0f} | {tuned_s:.0f} | "
              f"{balanced_accuracy_score(y_test, best.predict(X_test)):.3f} | {_epochs(best)}",
              flush=True)


def embeddings(quick: bool, cv_values: tuple = (None,)) -> None:
    data = load_elpv(n_samples=200 if quick else 300, random_state=1)
    X, y = data.images, data.target
    width = 16
    names = ["frozen", *(f"fine-tuned{'' if cv is None else f', cv={cv}'}" for cv in cv_values)]
    print(f"ELPV, {len(y)} cells, 5-fold stratified CV: HistGradientBoosting on embeddings "
          f"PCA'd to {width}: balanced accuracy")
    print("fold | " + " | ".join(names) + " | fine-tune s")
    scores: dict[str, list[float]] = {name: [] for name in names}
    for fold, (train, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0)
                                         .split(X, y)):
        frozen = make_pipeline(ImageEmbedder(), PCA(width, random_state=0),
                               HistGradientBoostingClassifier(random_state=0))
        frozen.fit(X[train], y[train])
        scores["frozen"].append(balanced_accuracy_score(y[test], frozen.predict(X[test])))
        seconds = []
        for name, cv in zip(names[1:], cv_values, strict=True):
            tuned = make_pipeline(
                FineTunedImageEmbedder(n_components=width, max_epochs=1 if quick else 8,
                                       class_weight="balanced", cv=cv, random_state=0),
                HistGradientBoostingClassifier(random_state=0))
            tuned, spent = _timed(lambda tuned=tuned, train=train: tuned.fit(X[train],
                                                                             y[train]))
            scores[name].append(balanced_accuracy_score(y[test], tuned.predict(X[test])))
            seconds.append(f"{spent:.0f}")
        print(f"{fold} | " + " | ".join(f"{scores[name][-1]:.3f}" for name in names)
              + f" | {', '.join(seconds)}", flush=True)
    print("mean ± std | " + " | ".join(_mean_std(scores[name]) for name in names))


def _mean_std(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _rmse(y, predicted) -> float:
    return float(np.sqrt(mean_squared_error(y, predicted)))


def _ridge():
    """``RidgeCV`` on the features as they are: standardising them first scales features all
    but dead on the training rows up a thousandfold, and doubled the error on two ELPV folds
    of five."""
    return RidgeCV(alphas=RIDGE_ALPHAS)


def _logistic():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000,
                                                              class_weight="balanced"))


def _elpv_500(quick: bool):
    data = load_elpv(n_samples=120 if quick else 500, random_state=0)
    mono = (np.asarray(data.cell_type) == "mono").astype(int)
    return data.images, data.defect_probability.astype(float), data.target, mono


def regression(quick: bool, folds: int = 5) -> None:
    X, probability, _, _ = _elpv_500(quick)
    frozen_features = ImageEmbedder().fit_transform(X)
    print(f"ELPV defect probability, {len(X)} cells, {folds}-fold: RMSE (lower is better)")
    print("fold | frozen + RidgeCV | FineTunedImageRegressor | fine-tune s | kept epoch")
    scores: dict[str, list[float]] = {"frozen": [], "fine-tuned": []}
    for fold, (train, test) in enumerate(KFold(folds, shuffle=True, random_state=0).split(X)):
        ridge = _ridge().fit(frozen_features[train], probability[train])
        tuned, seconds = _timed(lambda train=train: FineTunedImageRegressor(
            max_epochs=1 if quick else 8, random_state=0).fit(X[train], probability[train]))
        scores["frozen"].append(_rmse(probability[test], ridge.predict(frozen_features[test])))
        scores["fine-tuned"].append(_rmse(probability[test], tuned.predict(X[test])))
        print(f"{fold} | {scores['frozen'][-1]:.4f} | {scores['fine-tuned'][-1]:.4f} | "
              f"{seconds:.0f} | {_epochs(tuned)}", flush=True)
    print(f"mean ± std | {_mean_std(scores['frozen'])} | {_mean_std(scores['fine-tuned'])}")


def multitask(quick: bool, folds: int = 5) -> None:
    import pandas as pd

    X, probability, _, mono = _elpv_500(quick)
    both = pd.DataFrame({"probability": probability, "type": np.where(mono, "mono", "poly")})
    frozen_features = ImageEmbedder().fit_transform(X)
    epochs = 1 if quick else 8
    print(f"ELPV, {len(X)} cells, {folds}-fold: defect probability (RMSE of RidgeCV on the "
          "features) and cell type (balanced accuracy of a logistic regression)")
    print("fold | frozen: RMSE, type | single-task: RMSE, type | multitask: RMSE, type | "
          "fine-tune s (single, single, multi)")
    scores: dict[str, list[tuple[float, float]]] = {"frozen": [], "single": [], "multi": []}
    for fold, (train, test) in enumerate(KFold(folds, shuffle=True, random_state=0).split(X)):
        def evaluate(train_features, test_features, train=train, test=test):
            ridge = _ridge().fit(train_features, probability[train])
            logistic = _logistic().fit(train_features, mono[train])
            return (_rmse(probability[test], ridge.predict(test_features)),
                    balanced_accuracy_score(mono[test], logistic.predict(test_features)))

        scores["frozen"].append(evaluate(frozen_features[train], frozen_features[test]))
        by_task, seconds = {}, []
        for task in ("probability", "type"):
            model, spent = _timed(lambda task=task, train=train: FineTunedImageEmbedder(
                max_epochs=epochs, random_state=0).fit(X[train], both[task].to_numpy()[train]))
            by_task[task] = evaluate(model.transform(X[train]), model.transform(X[test]))
            seconds.append(f"{spent:.0f}")
        scores["single"].append((by_task["probability"][0], by_task["type"][1]))
        model, spent = _timed(lambda train=train: FineTunedImageEmbedder(
            max_epochs=epochs, random_state=0).fit(X[train], both.iloc[train]))
        seconds.append(f"{spent:.0f}")
        scores["multi"].append(evaluate(model.transform(X[train]), model.transform(X[test])))
        print(f"{fold} | " + " | ".join(f"{scores[n][-1][0]:.4f}, {scores[n][-1][1]:.3f}"
                                        for n in scores) + f" | {', '.join(seconds)}",
              flush=True)
    print("mean ± std | " + " | ".join(
        f"{_mean_std([s[0] for s in scores[n]])}, {_mean_std([s[1] for s in scores[n]])}"
        for n in scores))


def multilabel(quick: bool, folds: int = 5) -> None:
    X, _, defective, mono = _elpv_500(quick)
    labels = np.column_stack([defective, mono])
    epochs = 1 if quick else 8
    print(f"ELPV, {len(X)} cells, {folds}-fold: balanced accuracy of 'defective' and 'mono'")
    print("fold | one classifier per label: defective, mono | one multi-label classifier: "
          "defective, mono | fine-tune s (single, single, multi)")
    scores: dict[str, list[list[float]]] = {"single": [], "multi": []}
    for fold, (train, test) in enumerate(
            StratifiedKFold(folds, shuffle=True, random_state=0).split(X, defective)):
        single, seconds = [], []
        for label in range(2):
            model, spent = _timed(lambda label=label, train=train: FineTunedImageClassifier(
                max_epochs=epochs, random_state=0).fit(X[train], labels[train, label]))
            single.append(balanced_accuracy_score(labels[test, label], model.predict(X[test])))
            seconds.append(f"{spent:.0f}")
        model, spent = _timed(lambda train=train: FineTunedImageClassifier(
            max_epochs=epochs, random_state=0).fit(X[train], labels[train]))
        seconds.append(f"{spent:.0f}")
        predicted = model.predict(X[test])
        scores["single"].append(single)
        scores["multi"].append([balanced_accuracy_score(labels[test, j], predicted[:, j])
                                for j in range(2)])
        print(f"{fold} | " + " | ".join(", ".join(f"{v:.3f}" for v in scores[n][-1])
                                        for n in scores) + f" | {', '.join(seconds)}",
              flush=True)
    print("mean ± std | " + " | ".join(", ".join(_mean_std([s[j] for s in scores[n]])
                                                 for j in range(2)) for n in scores))


def reviews_multitask(quick: bool, folds: int = 3) -> None:
    import pandas as pd

    data = load_rotten_tomatoes(n_samples=600 if quick else 2000, random_state=0, plots=True)
    texts, films = np.asarray(data.text, dtype=object), np.asarray(data.movie)
    tasks = pd.DataFrame({"is_review": data.is_review, "sentiment": data.target})
    reviews = data.is_review == 1
    y = data.target
    epochs = 1 if quick else TEXT_EPOCHS
    print(f"Rotten Tomatoes with plot synopses: {len(texts)} snippets ({reviews.sum()} "
          f"reviews), GroupKFold({folds}) by film: sentiment accuracy on the test reviews")
    print("fold | single-task (sentiment, reviews only) | multitask (plot or review + "
          "sentiment) | fine-tune s (single, multi)")
    scores: dict[str, list[float]] = {"single": [], "multi": []}
    for fold, (train, test) in enumerate(GroupKFold(folds).split(texts, groups=films)):
        train_reviews, test_reviews = train[reviews[train]], test[reviews[test]]

        def accuracy(model, train_reviews=train_reviews, test_reviews=test_reviews):
            logistic = LogisticRegression(max_iter=3000).fit(
                model.transform(texts[train_reviews]), y[train_reviews].astype(int))
            return float(np.mean(logistic.predict(model.transform(texts[test_reviews]))
                                 == y[test_reviews]))

        single, single_s = _timed(lambda train_reviews=train_reviews: FineTunedTextEmbedder(
            max_epochs=epochs, random_state=0).fit(texts[train_reviews],
                                                   y[train_reviews].astype(int)))
        multi, multi_s = _timed(lambda train=train: FineTunedTextEmbedder(
            max_epochs=epochs, random_state=0).fit(texts[train], tasks.iloc[train]))
        scores["single"].append(accuracy(single))
        scores["multi"].append(accuracy(multi))
        print(f"{fold} | {scores['single'][-1]:.3f} | {scores['multi'][-1]:.3f} | "
              f"{single_s:.0f}, {multi_s:.0f}", flush=True)
    print(f"mean ± std | {_mean_std(scores['single'])} | {_mean_std(scores['multi'])}")


def crossfit(quick: bool) -> None:
    embeddings(quick, cv_values=(None, 3))


def _reviews(n: int):
    data = load_rotten_tomatoes(n_samples=n, random_state=0)
    return np.asarray(data.text, dtype=object), np.asarray(data.target), np.asarray(data.movie)


def reviews(quick: bool) -> None:
    texts, y, films = _reviews(600 if quick else 2000)
    n_splits = 2 if quick else 5
    print(f"Rotten Tomatoes, {len(y)} snippets, GroupKFold({n_splits}) by film: accuracy")
    print("fold | frozen + logistic | fine-tuned | fine-tune s | kept epoch")
    scores = {"frozen": [], "fine-tuned": []}
    for fold, (train, test) in enumerate(GroupKFold(n_splits).split(texts, y, films)):
        frozen = make_pipeline(TextEmbedder(), LogisticRegression(max_iter=3000))
        frozen.fit(texts[train], y[train])
        tuned, seconds = _timed(lambda train=train: FineTunedTextClassifier(
            max_epochs=1 if quick else TEXT_EPOCHS, random_state=0).fit(texts[train],
                                                                        y[train]))
        scores["frozen"].append(float(np.mean(frozen.predict(texts[test]) == y[test])))
        scores["fine-tuned"].append(float(np.mean(tuned.predict(texts[test]) == y[test])))
        print(f"{fold} | {scores['frozen'][-1]:.3f} | {scores['fine-tuned'][-1]:.3f} | "
              f"{seconds:.0f} | {_epochs(tuned)}", flush=True)
    print(f"mean | {np.mean(scores['frozen']):.3f} | {np.mean(scores['fine-tuned']):.3f} |")


def imbalanced(quick: bool) -> None:
    texts, y, films = _reviews(4000)
    rng = np.random.default_rng(0)
    fresh, rotten = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_fresh = 510 if quick else 1700
    keep = np.concatenate([rng.choice(fresh, n_fresh, replace=False),
                           rng.choice(rotten, n_fresh * 15 // 85, replace=False)])
    texts, y, films = texts[keep], y[keep], films[keep]
    train, test = next(GroupKFold(4).split(texts, y, films))
    print(f"Imbalanced reviews: {len(y)} snippets, {np.mean(y == 1):.0%} fresh; one grouped "
          f"split ({len(train)} train, {len(test)} test): balanced accuracy")
    frozen = make_pipeline(TextEmbedder(), LogisticRegression(max_iter=3000,
                                                              class_weight="balanced"))
    frozen.fit(texts[train], y[train])
    tuned, seconds = _timed(lambda: FineTunedTextClassifier(
        max_epochs=1 if quick else TEXT_EPOCHS, class_weight="balanced",
        random_state=0).fit(texts[train], y[train]))
    print(f"frozen + logistic (balanced): "
          f"{balanced_accuracy_score(y[test], frozen.predict(texts[test])):.3f}")
    print(f"fine-tuned (class_weight='balanced', last epoch kept): "
          f"{balanced_accuracy_score(y[test], tuned.predict(texts[test])):.3f} in {seconds:.0f} s")
    for record in tuned.history_:
        print(f"  epoch {record['epoch']}: validation balanced accuracy "
              f"{record['val_balanced_accuracy']:.3f}, classes predicted "
              f"{record['val_predicted_classes']}")


def reuse(quick: bool) -> None:
    texts, y, _ = _reviews(300 if quick else 1000)
    elpv_data = load_elpv(n_samples=100 if quick else 300, random_state=2)
    print("Head-only epochs: frozen features computed once against every epoch "
          "(seconds of epochs 1-3, the probe excluded)")
    print("task | reused | recomputed | speed-up")
    for name, make, X, target in [
        ("text (MiniLM)", lambda: FineTunedTextClassifier(head_epochs=3, max_epochs=3,
                                                          random_state=0), texts, y),
        ("images, augment=False", lambda: FineTunedImageClassifier(
            head_epochs=3, max_epochs=3, augment=False, random_state=0),
         elpv_data.images, elpv_data.target),
    ]:
        seconds = []
        for reuse_frozen in (True, False):
            model = make()
            model._reuse_frozen = reuse_frozen
            model.fit(X, target)
            seconds.append(sum(r["seconds"] for r in model.history_[1:]))
        print(f"{name} | {seconds[0]:.2f} | {seconds[1]:.2f} | {seconds[1] / seconds[0]:.0f}×",
              flush=True)


def never_lose(quick: bool, folds: int = 3) -> None:
    from never_lose import DATASETS, run  # beside this file: Python puts it on the path

    for name in DATASETS:
        run(name, folds, quick)


TASKS = {"elpv": elpv, "embeddings": embeddings, "reviews": reviews,
         "imbalanced": imbalanced, "reuse": reuse, "regression": regression,
         "multitask": multitask, "multilabel": multilabel,
         "reviews_multitask": reviews_multitask, "crossfit": crossfit,
         "never_lose": never_lose}
FOLDED = {"regression", "multitask", "multilabel", "reviews_multitask", "never_lose"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", default=list(TASKS),
                        help=f"any of {', '.join(TASKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--folds", type=int, default=None,
                        help="folds of the regression, multitask and never_lose comparisons")
    args = parser.parse_args()
    unknown = set(args.tasks) - set(TASKS)
    if unknown:
        parser.error(f"unknown task(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(TASKS)}")
    for task in args.tasks:
        if task in FOLDED and args.folds is not None:
            TASKS[task](args.quick, folds=args.folds)
        else:
            TASKS[task](args.quick)
        print()


if __name__ == "__main__":
    main()
