"""Does the default fine-tuning ever lose to frozen features? Several packaged datasets, one
held out: the measurements behind the "Never worse than frozen" table of docs/finetuning.md.

Datasets (images are greyscale, resized by the model's own preprocessing):

- ``elpv``: ELPV solar cells, 500, defective or not (``elpv-dataset``);
- ``faces``: scikit-image's LFW subset, 200 images of 25x25 pixels, face or not;
- ``digits``: scikit-learn's digits, 600 of 8x8 pixels, ten classes;
- ``reviews``: Rotten Tomatoes, 2,000 snippets, fresh or rotten, folds grouped by film;
- ``imbalanced``: Rotten Tomatoes resampled to 80 % fresh, 900 snippets (600 to train per
  fold), grouped by film;
- ``fashion`` (**held out**: no choice was made on it): Fashion-MNIST, 600 of 28x28 pixels,
  ten classes (Debian's ``dataset-fashion-mnist``).

Per fold (``--folds``, stratified, or grouped by film for text), balanced accuracy on the
test fold of the following, and the ROC AUC (one class against the rest, macro-averaged,
for ten classes) of the first two:

- frozen features (``ImageEmbedder``/``TextEmbedder`` defaults) + standardised,
  class-weighted ``LogisticRegressionCV``: the three-line baseline;
- ``FineTuned*Classifier(class_weight="balanced")``, defaults otherwise, as fitted;
- from the same fit (one training run gives every guard: the guard only chooses among
  weight mixes scored on the validation split): the probe (epoch 0), the last epoch (no
  guard, ``guard=None``), ``guard="probe"``, ``guard="wise"``, the mix with the best
  validation loss without the rule that it must beat the probe beyond the noise ("best
  mix"), and the ensemble (mean probabilities of the probe and the last epoch). These use
  the probe fitted on the training split; the estimator refits a kept probe on every row;
- HistGradientBoosting on frozen embeddings, on the fitted network's embeddings (what
  ``FineTuned*Embedder`` with the same parameters returns), and on the last epoch's.

Run: python benchmarks/never_lose.py [DATASET ...] [--folds K] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer.datasets import load_elpv, load_rotten_tomatoes
from sktransfer.finetune import FineTunedImageClassifier, FineTunedTextClassifier
from sktransfer.finetune.training import GUARD_MIXES, best_mix, choose_mix, mixed

FASHION = Path("/usr/share/datasets/fashion-mnist")
VARIANTS = ["frozen + logistic", "fine-tuned (default)", "probe", "last epoch",
            "guard=probe", "guard=wise", "best mix", "ensemble", "HGB frozen", "HGB fine-tuned",
            "HGB last epoch", "AUC frozen", "AUC fine-tuned"]


def _subset(y: np.ndarray, n: int) -> np.ndarray:
    if n >= len(y):
        return np.arange(len(y))
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=0)
    return np.sort(keep)


def _uint8(images: np.ndarray, top: float) -> np.ndarray:
    return np.clip(np.rint(images * (255.0 / top)), 0, 255).astype(np.uint8)


def elpv(n: int):
    data = load_elpv(n_samples=n, random_state=0)
    return "image", data.images, np.asarray(data.target), None


def faces(n: int):
    from skimage.data import lfw_subset

    images = lfw_subset()  # the first 100 are faces, the other 100 are not
    y = (np.arange(len(images)) < 100).astype(int)
    keep = _subset(y, n)
    return "image", _uint8(images, 1.0)[keep], y[keep], None


def digits(n: int):
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = _subset(data.target, n)
    return "image", _uint8(data.images, 16.0)[keep], data.target[keep], None


def fashion(n: int):
    if not FASHION.is_dir():
        raise SystemExit(f"Fashion-MNIST is not installed ({FASHION}): apt-get install "
                         "dataset-fashion-mnist")
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(int)
    keep = _subset(y, n)
    return "image", images[keep], y[keep], None


def reviews(n: int):
    data = load_rotten_tomatoes(n_samples=n, random_state=0)
    return "text", np.asarray(data.text, dtype=object), np.asarray(data.target), \
        np.asarray(data.movie)


def imbalanced(n: int):
    data = load_rotten_tomatoes(n_samples=4000, random_state=0)
    y, rng = np.asarray(data.target), np.random.default_rng(0)
    n_fresh = n * 4 // 5
    keep = np.concatenate([rng.choice(np.flatnonzero(y == 1), n_fresh, replace=False),
                           rng.choice(np.flatnonzero(y == 0), n - n_fresh, replace=False)])
    return "text", np.asarray(data.text, dtype=object)[keep], y[keep], \
        np.asarray(data.movie)[keep]


DATASETS = {"elpv": (elpv, 500), "faces": (faces, 200), "digits": (digits, 600),
            "reviews": (reviews, 2000), "imbalanced": (imbalanced, 900),
            "fashion": (fashion, 600)}
HELD_OUT = "fashion"


def _balanced(y, predicted) -> float:
    return float(balanced_accuracy_score(y, predicted))


def _auc(y, probabilities, classes) -> float:
    if len(classes) == 2:
        return roc_auc_score(y == classes[1], probabilities[:, 1])
    return roc_auc_score(y, probabilities, multi_class="ovr", labels=classes)


def _hgb(train_features, y_train, test_features, y_test) -> float:
    model = HistGradientBoostingClassifier(random_state=0).fit(train_features, y_train)
    return _balanced(y_test, model.predict(test_features))


def _embed(tuned, X) -> np.ndarray:
    """The fitted network's penultimate features: what ``FineTuned*Embedder.transform``
    returns for an embedder fitted with the same parameters."""
    return tuned._outputs(list(X), features=True)


def _fold(kind, X, y, frozen, train, test, seed, quick) -> dict[str, float]:
    estimator = FineTunedImageClassifier if kind == "image" else FineTunedTextClassifier
    tuned = estimator(class_weight="balanced", random_state=seed,
                      **({"max_epochs": 1} if quick else {}))
    tuned._keep_endpoints = True  # both ends of the mix, to score every guard from one fit
    started = time.perf_counter()
    tuned.fit(X[train], y[train])
    seconds = time.perf_counter() - started
    losses = [record["val_loss"] for record in tuned.history_]
    scores = {"seconds": seconds, "mixing": tuned.mixing_,
              "val loss": f"{min(losses):.3f}-{max(losses):.3f}"}
    baseline = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=np.logspace(-4, 2, 7), l1_ratios=(0.0,), scoring="neg_log_loss",
        use_legacy_attributes=False, class_weight="balanced", max_iter=3000))
    baseline.fit(frozen[train], y[train])
    scores["frozen + logistic"] = _balanced(y[test], baseline.predict(frozen[test]))
    scores["fine-tuned (default)"] = _balanced(y[test], tuned.predict(X[test]))
    scores["AUC frozen"] = _auc(y[test], baseline.predict_proba(frozen[test]), baseline.classes_)
    scores["AUC fine-tuned"] = _auc(y[test], tuned.predict_proba(X[test]), tuned.classes_)
    scores["HGB frozen"] = _hgb(frozen[train], y[train], frozen[test], y[test])
    scores["HGB fine-tuned"] = _hgb(_embed(tuned, X[train]), y[train],
                                    _embed(tuned, X[test]), y[test])
    ends = tuned.__dict__.get("_endpoints")
    if ends is None:  # nothing trained beyond the probe was kept to mix (max_epochs=0)
        return scores
    fitted = copy.deepcopy(tuned.net_.state_dict()), tuned._calibration

    def use(mix: float) -> None:  # the network (and calibration) of one weight mix
        tuned.net_.load_state_dict(mixed(ends.probe, ends.tuned, mix))
        tuned._calibration = ends.validations[mix].calibration

    probabilities = {}
    for mix in (0.0, 1.0):
        use(mix)
        probabilities[mix] = tuned.predict_proba(X[test])
    scores["probe"] = _balanced(y[test], tuned.classes_[probabilities[0.0].argmax(1)])
    scores["last epoch"] = _balanced(y[test], tuned.classes_[probabilities[1.0].argmax(1)])
    scores["ensemble"] = _balanced(
        y[test], tuned.classes_[(probabilities[0.0] + probabilities[1.0]).argmax(1)])
    scores["HGB last epoch"] = _hgb(_embed(tuned, X[train]), y[train],
                                    _embed(tuned, X[test]), y[test])
    for guard, allowed in GUARD_MIXES.items():
        mix = choose_mix({m: ends.validations[m] for m in allowed}, None)
        use(mix)
        scores[f"guard={guard}"] = _balanced(y[test], tuned.predict(X[test]))
        scores[f"guard={guard} mix"] = mix
    use(best_mix(ends.validations))
    scores["best mix"] = _balanced(y[test], tuned.predict(X[test]))
    tuned.net_.load_state_dict(fitted[0])
    tuned._calibration = fitted[1]
    return scores


def run(name: str, folds: int, quick: bool) -> None:
    loader, n = DATASETS[name]
    kind, X, y, groups = loader(min(n, 150) if quick else n)
    embedder = ImageEmbedder() if kind == "image" else TextEmbedder()
    frozen = embedder.fit_transform(X)  # per row, so computing it once leaks nothing
    splitter = (GroupKFold(folds) if groups is not None
                else StratifiedKFold(folds, shuffle=True, random_state=0))
    title = f"{name}{' (held out)' if name == HELD_OUT else ''}"
    print(f"{title}: {len(y)} rows, {len(np.unique(y))} classes, smallest class "
          f"{np.bincount(np.unique(y, return_inverse=True)[1]).min()}; balanced accuracy")
    print("fold | " + " | ".join(VARIANTS) + " | wise mix | validation loss over epochs "
          "| fit s")
    rows = []
    for fold, (train, test) in enumerate(splitter.split(X, y, groups)):
        scores = _fold(kind, X, y, frozen, train, test, fold, quick)
        rows.append(scores)
        print(f"{fold} | " + " | ".join(f"{scores.get(v, float('nan')):.3f}" for v in VARIANTS)
              + f" | {scores.get('guard=wise mix', float('nan')):g} | {scores['val loss']} | "
              f"{scores['seconds']:.0f}", flush=True)
    print("mean ± std | " + " | ".join(
        f"{np.mean([r.get(v, np.nan) for r in rows]):.3f} ± "
        f"{np.std([r.get(v, np.nan) for r in rows]):.3f}" for v in VARIANTS) + " | | |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=list(DATASETS),
                        help=f"any of {', '.join(DATASETS)} (default: all)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    unknown = set(args.datasets) - set(DATASETS)
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(sorted(unknown))}")
    for name in args.datasets:
        run(name, args.folds, args.quick)


if __name__ == "__main__":
    main()
