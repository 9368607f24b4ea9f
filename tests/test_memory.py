"""Memory stays bounded: large images are decoded a batch at a time, never all at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from sktransfer import ImageEmbedder

    folder = Path(sys.argv[1])
    big = np.asarray(Image.fromarray(load_sample_image("china.jpg")).resize((2400, 1800)))
    paths = []
    for i in range(120):
        pixels = big.copy()
        pixels[:8, :8] = i  # every file differs, so nothing is deduplicated
        path = folder / f"big{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=80)
        paths.append(path)
    del big, pixels

    embedder = ImageEmbedder("test_efficientnet", weights="random", batch_size=8).fit(paths)
    embedder.transform(paths[:8])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = embedder.transform(paths)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    decoded_mb = 120 * 2400 * 1800 * 3 / 2**20
    print(f"{out.shape} peak_growth_mb={after - before:.0f} all_decoded_mb={decoded_mb:.0f}")
""")


def test_peak_memory_is_a_few_batches_not_the_decoded_dataset(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    growth = float(line.split("peak_growth_mb=")[1].split()[0])
    decoded = float(line.split("all_decoded_mb=")[1])
    assert line.startswith("(120, 256)")
    # Holding the decoded images would take ~1.5 GB; two batches in flight take ~200 MB.
    assert growth < min(300, decoded / 4), line
