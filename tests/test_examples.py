"""Every example runs as a user would run it, on smaller samples, and prints its result.

Marked ``examples`` (a few minutes in all); CI runs them with the rest of the suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.examples

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RUNS = {
    "elpv_transfer.py": (["--n-samples", "300"], "pretrained EfficientNet-Lite0"),
    "text_classification.py": (["--n-samples", "400"], "all-MiniLM-L6-v2 + logistic"),
    "tabular_plus_image.py": (["--n-samples", "200"], "image + cell type"),
    "clustering.py": (["--n-samples", "200"], "adjusted Rand index"),
    "grid_search_cache.py": (["--n-samples", "120"], "best:"),
    "transfer_diagnostics.py": (["--n-images", "200", "--n-texts", "300"], "verdict"),
    "finetune_vs_frozen.py": (["--sizes", "60", "--n-test", "60", "--max-epochs", "2"],
                              "fine-tuned"),
    "regression_and_multitask.py": (["--n-samples", "120", "--max-epochs", "1"],
                                    "multitask features: defect probability RMSE"),
}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_runs(name, tmp_path):
    args, expected = RUNS[name]
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout, result.stdout
