"""What the feature cache saves: grid search over a frozen embedder, side by side in one run.

For 2,000 Rotten Tomatoes snippets (all-MiniLM-L6-v2) and 1,000 ELPV images
(EfficientNet-Lite0), the images once as an array and once as PNG files (the common case:
a column of paths), with the backbone already loaded, it times:

- one uncached embedding pass (the unit every other time is divided by),
- GridSearchCV(cv=5, 6 values of C) over Pipeline(embedder(cache=dir), LogisticRegression),
  starting from an empty cache,
- the same grid search without a cache,
- the same grid search over features computed beforehand (the classifier's own cost: the
  floor that no cache can go below, beyond the one embedding pass),
- a first transform that fills a cache, then a second transform of the same data.

BLAS threads: the grid searches and the classifier alone run with OpenBLAS limited to one
thread (``threadpoolctl.threadpool_limits(1, "blas")``). NumPy and SciPy wheels each bundle an
OpenBLAS; with two threads each on two cores, SciPy's L-BFGS-B (LogisticRegression's solver)
alternates between them and runs 9-15x slower than with one thread (scipy/scipy#22438,
OpenMathLib/OpenBLAS#5383; botorch wraps its ``minimize`` calls the same way). The embedding
pass does not use OpenBLAS (torch and ONNX Runtime have their own kernels; measured unchanged).
The classifier alone and the cached search are also timed once with the default BLAS threads,
so the table shows what that costs.

The cheap measurements are repeated ``--repeats`` times, interleaved (pass, cached search,
classifier alone, first and second transform, then again), and their medians are reported;
the uncached search (31 passes) and the default-BLAS runs happen once.

Run: python benchmarks/cache_grid_search.py [--repeats R] [--skip-uncached-search] [--out FILE]
Writes a markdown table (default benchmarks/results/cache_grid_search.md).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from sktransfer import ImageEmbedder, TextEmbedder
from sktransfer.datasets import load_elpv, load_rotten_tomatoes

C_GRID = {"logisticregression__C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}


def timed(work) -> float:
    return timed_result(work)[0]


def timed_result(work) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def measure(name, X, y, make_embedder, cv, groups=None, uncached_search=True,
            repeats=1) -> dict:
    make_embedder(None).fit(X[:1])  # load the backbone once, outside every timing

    def search(cache, data=X, embedder=True, blas_threads=1):
        steps = [make_embedder(cache)] if embedder else []
        pipe = make_pipeline(*steps, LogisticRegression(max_iter=2000))
        with threadpool_limits(blas_threads, user_api="blas"):
            return GridSearchCV(pipe, C_GRID, cv=cv).fit(data, y, groups=groups)

    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        times = {}
        times["pass_s"], features = timed_result(lambda: make_embedder(None).fit_transform(X))
        with tempfile.TemporaryDirectory() as folder:
            times["search_cached_s"] = timed(lambda: search(folder))
        times["search_features_s"] = timed(
            lambda: search(None, features, embedder=False))  # noqa: B023
        with tempfile.TemporaryDirectory() as folder:
            times["first_s"] = timed(lambda: make_embedder(folder).fit_transform(X))
            times["second_s"] = timed(lambda: make_embedder(folder).fit_transform(X))
        for key, value in times.items():
            runs.setdefault(key, []).append(value)
    row = {"data": name, "n": len(X), "repeats": repeats,
           **{key: float(np.median(values)) for key, values in runs.items()},
           "cached_search_over_pass_each_run": [
               round(s / p, 3) for s, p in zip(runs["search_cached_s"], runs["pass_s"],
                                              strict=True)]}
    row["search_uncached_s"] = timed(lambda: search(None)) if uncached_search else float("nan")
    # once, with the machine's default BLAS threads (None: threadpoolctl leaves them alone)
    row["search_features_default_blas_s"] = timed(
        lambda: search(None, features, embedder=False, blas_threads=None))
    with tempfile.TemporaryDirectory() as folder:
        row["search_cached_default_blas_s"] = timed(lambda: search(folder, blas_threads=None))
    print(row, file=sys.stderr, flush=True)
    return row


def write_pngs(images: np.ndarray, folder: str) -> list[str]:
    """One PNG file per image. Waits until they are 2 s old: sktransfer trusts a remembered
    file digest only for files not changed just before they were read, and a user's image
    files are older than that."""
    from PIL import Image

    paths = []
    for i, image in enumerate(images):
        paths.append(str(Path(folder) / f"cell_{i:04d}.png"))
        Image.fromarray(image).save(paths[-1])
    time.sleep(2.5)
    return paths


def _ratio(seconds: float, unit: float) -> str:
    return "not run" if np.isnan(seconds) else f"{seconds / unit:.1f}×"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved repeats of the cheap measurements (medians reported)")
    parser.add_argument("--skip-uncached-search", action="store_true",
                        help="skip the slow grid search without cache (31 embedding passes)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "cache_grid_search.md")
    args = parser.parse_args()
    uncached = not args.skip_uncached_search

    reviews = load_rotten_tomatoes(n_samples=2000)
    elpv = load_elpv(n_samples=1000)
    files = tempfile.TemporaryDirectory()
    paths = write_pngs(elpv.images, files.name)
    rows = [
        measure("Rotten Tomatoes, all-MiniLM-L6-v2", list(reviews.text), reviews.target,
                lambda cache: TextEmbedder(cache=cache), GroupKFold(5), reviews.movie, uncached,
                args.repeats),
        measure("ELPV, EfficientNet-Lite0", elpv.images, elpv.target,
                lambda cache: ImageEmbedder(cache=cache),
                StratifiedKFold(5, shuffle=True, random_state=0), None, uncached, args.repeats),
        measure("ELPV as PNG files, EfficientNet-Lite0", paths, elpv.target,
                lambda cache: ImageEmbedder(cache=cache),
                StratifiedKFold(5, shuffle=True, random_state=0), None, uncached, args.repeats),
    ]
    files.cleanup()
    lines = [
        "# Feature cache: grid search cost",
        "",
        f"Command: `python benchmarks/cache_grid_search.py --repeats {args.repeats}"
        f"{' --skip-uncached-search' * (not uncached)}` on {platform.machine()}, "
        f"Python {platform.python_version()}, 2 cores, CPU only. Medians of {args.repeats} "
        "interleaved repeats; the uncached search ran once.",
        "GridSearchCV(cv=5, 6 values of C) = 31 fits, each embedding its training and test folds.",
        "Times are relative to one uncached embedding pass over the same data (measured in the "
        "same run, backbone already loaded). The cache starts empty in each grid search.",
        "Searches and classifier: OpenBLAS limited to 1 thread (see the script's docstring); "
        "the last two columns use the default BLAS threads instead (one run each).",
        "\"Embedder's share\" is the cached search minus the classifier alone: what embedding "
        "and cache reads cost inside the search.",
        "",
        "| data | n | one pass (s) | grid search, cache | grid search, no cache "
        "| classifier alone on precomputed features | embedder's share of the cached search "
        "| 1st transform (fills cache) | 2nd transform (from cache) | 1st / 2nd "
        "| classifier alone, default BLAS threads | grid search, cache, default BLAS threads |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        p = r["pass_s"]
        lines.append(
            f"| {r['data']} | {r['n']} | {p:.1f} | {r['search_cached_s'] / p:.2f}× "
            f"| {_ratio(r['search_uncached_s'], p)} | {r['search_features_s'] / p:.2f}× "
            f"| {(r['search_cached_s'] - r['search_features_s']) / p:.2f}× "
            f"| {r['first_s'] / p:.2f}× "
            f"| {r['second_s'] / p:.4f}× | {r['first_s'] / r['second_s']:.0f}× "
            f"| {r['search_features_default_blas_s'] / p:.2f}× "
            f"| {r['search_cached_default_blas_s'] / p:.2f}× |")
    lines += ["", "Cached grid search / one pass, each repeat: " + "; ".join(
        f"{r['data']}: {r['cached_search_over_pass_each_run']}" for r in rows)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
