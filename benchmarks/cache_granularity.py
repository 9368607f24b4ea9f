"""What storing every text batch in the cache as it finishes costs, and what a kill can lose.

A cached ``TextEmbedder.transform`` stores each forward batch (``batch_size`` texts) in its own
SQLite transaction, so ``kill -9`` loses at most the batch in flight. This script measures,
side by side in one run on 3,000 distinct Rotten Tomatoes snippets:

- a cold cached transform (every batch embedded and stored) against the same transform with
  no cache: the whole price of caching, per-batch commits included;
- the stores alone: the same 3,000 vectors written in one transaction per batch of 32 (what
  runs now) against one per 1,024 texts (the chunks stored before);
- the seconds one batch takes to embed: the most a kill can lose.

Run: ``python benchmarks/cache_granularity.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from sktransfer import FeatureCache, TextEmbedder
from sktransfer.datasets import load_rotten_tomatoes

N_TEXTS = 3000
BATCH = 32
OLD_CHUNK = BATCH * 32


def seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def store_in(cache: FeatureCache, vectors: np.ndarray, size: int) -> None:
    keys = [i.to_bytes(16, "big") for i in range(len(vectors))]
    for start in range(0, len(vectors), size):
        cache.store("bench", keys[start:start + size], vectors[start:start + size], {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = list(dict.fromkeys(load_rotten_tomatoes().text))[:N_TEXTS]
    plain = TextEmbedder(batch_size=BATCH).fit(texts[:1])
    plain.transform(texts[:64])  # load and warm up
    cold, uncached, per_batch, per_chunk = [], [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            cached = TextEmbedder(batch_size=BATCH, cache=folder).fit(texts[:1])
            cold.append(seconds(lambda: cached.transform(texts)))  # noqa: B023
        uncached.append(seconds(lambda: plain.transform(texts)))
        vectors = np.random.default_rng(0).standard_normal((N_TEXTS, 384)).astype(np.float32)
        for size, out in ((BATCH, per_batch), (OLD_CHUNK, per_chunk)):
            with tempfile.TemporaryDirectory() as folder:
                cache = FeatureCache(folder, memory_bytes=0)
                out.append(seconds(lambda: store_in(cache, vectors, size)))  # noqa: B023
    median = statistics.median
    n_batches = -(-N_TEXTS // BATCH)
    print(f"{N_TEXTS} texts, batch_size={BATCH}, median of {args.repeats} runs")
    print(f"cold cached transform {median(cold):7.2f} s   uncached {median(uncached):7.2f} s"
          f"   ratio {median(c / u for c, u in zip(cold, uncached, strict=True)):.3f}")
    print(f"stores alone: {n_batches} transactions {median(per_batch):.3f} s, "
          f"{-(-N_TEXTS // OLD_CHUNK)} transactions {median(per_chunk):.3f} s "
          f"(+{(median(per_batch) - median(per_chunk)) * 1e3:.0f} ms, "
          f"{(median(per_batch) - median(per_chunk)) / median(uncached):.2%} of the transform)")
    one_batch = median(uncached) / n_batches
    print(f"one batch embeds in {one_batch:.3f} s: the most a kill loses (before: up to "
          f"{OLD_CHUNK} texts, {one_batch * OLD_CHUNK / BATCH:.1f} s)")


if __name__ == "__main__":
    main()
