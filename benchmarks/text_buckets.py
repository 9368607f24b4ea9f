"""Fixed padding-length buckets against padding to the longest text, side by side in one run.

Both paths run MiniLM (from its PyPI package) on the same Rotten Tomatoes snippets under the
same bfloat16 autocast: (a) ``SentenceTransformer.encode`` (each batch padded to its longest
text), (b) sktransfer's ``SentenceBackbone.encode`` (each text padded to its own bucket).
Interleaved repeats; medians reported. Also: how far a text moves between alone and batched
on each path, and the fidelity of (b) to float32 ``SentenceTransformer.encode``.

Run: python benchmarks/text_buckets.py [--texts 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sktransfer.backbones._runtime import inference
from sktransfer.backbones.sentence import get_sentence_backbone
from sktransfer.datasets import load_rotten_tomatoes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = list(load_rotten_tomatoes(n_samples=args.texts).text)
    backbone = get_sentence_backbone("all-MiniLM-L6-v2", "cpu", False)

    def longest(batch: list[str], precision: str = "bfloat16") -> np.ndarray:
        with inference("cpu", precision):
            return backbone.model.encode(batch, batch_size=32, normalize_embeddings=True,
                                         convert_to_numpy=True)

    def buckets(batch: list[str]) -> np.ndarray:
        return backbone.encode(batch, batch_size=32, normalize=True, precision="bfloat16")

    paths = {"padded to the longest (SentenceTransformer.encode)": longest,
             "fixed buckets (sktransfer)": buckets}
    for run in paths.values():
        run(texts[:64])  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, run in paths.items():
            start = time.perf_counter()
            run(texts)
            seconds[name].append(time.perf_counter() - start)
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"{name}: {len(texts) / median:.0f} texts/s (median of {args.repeats}: "
              f"{median:.2f} s)")
    sample = texts[:60]
    for name, run in paths.items():
        together = run(texts)[:60]
        alone = np.stack([run([text])[0] for text in sample])
        print(f"{name}: alone vs batched, max difference {np.abs(alone - together).max():.2e}")
    reference = longest(texts, "float32")
    cosine = (buckets(texts) * reference).sum(axis=1).min()
    print(f"fixed buckets, bfloat16 vs float32 SentenceTransformer.encode: min cosine "
          f"{cosine:.5f}")


if __name__ == "__main__":
    main()
