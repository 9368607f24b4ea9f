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

Run: python benchmarks/finetune.py [elpv embeddings reviews imbalanced reuse] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer.datasets import load_elpv, load_rotten_tomatoes
from sktransfer.finetune import (
    FineTunedImageClassifier,
    FineTunedImageEmbedder,
    FineTunedTextClassifier,
)

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


def embeddings(quick: bool) -> None:
    data = load_elpv(n_samples=200 if quick else 300, random_state=1)
    X, y = data.images, data.target
    width = 16
    print(f"ELPV, {len(y)} cells, 5-fold stratified CV: HistGradientBoosting on embeddings "
          f"PCA'd to {width}")
    print("fold | frozen | fine-tuned | fine-tune s")
    scores = {"frozen": [], "fine-tuned": []}
    for fold, (train, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0)
                                         .split(X, y)):
        frozen = make_pipeline(ImageEmbedder(), PCA(width, random_state=0),
                               HistGradientBoostingClassifier(random_state=0))
        tuned = make_pipeline(
            FineTunedImageEmbedder(n_components=width, max_epochs=1 if quick else 8,
                                   class_weight="balanced", random_state=0),
            HistGradientBoostingClassifier(random_state=0))
        frozen.fit(X[train], y[train])
        tuned, seconds = _timed(lambda tuned=tuned, train=train: tuned.fit(X[train], y[train]))
        scores["frozen"].append(balanced_accuracy_score(y[test], frozen.predict(X[test])))
        scores["fine-tuned"].append(balanced_accuracy_score(y[test], tuned.predict(X[test])))
        print(f"{fold} | {scores['frozen'][-1]:.3f} | {scores['fine-tuned'][-1]:.3f} | "
              f"{seconds:.0f}", flush=True)
    print(f"mean | {np.mean(scores['frozen']):.3f} | {np.mean(scores['fine-tuned']):.3f} |")


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


TASKS = {"elpv": elpv, "embeddings": embeddings, "reviews": reviews,
         "imbalanced": imbalanced, "reuse": reuse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", default=list(TASKS),
                        help=f"any of {', '.join(TASKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    unknown = set(args.tasks) - set(TASKS)
    if unknown:
        parser.error(f"unknown task(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(TASKS)}")
    for task in args.tasks:
        TASKS[task](args.quick)
        print()


if __name__ == "__main__":
    main()
