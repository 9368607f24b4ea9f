"""Importing sktransfer is cheap: torch and the model libraries load only when needed."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_does_not_import_torch():
    heavy = ["torch", "timm", "sentence_transformers", "transformers", "sklearn"]
    out = run(f"import sys, sktransfer; print([m for m in {heavy!r} if m in sys.modules])")
    assert out == "[]"


def test_estimator_classes_and_unpickling_do_not_import_torch():
    code = ("import sys, pickle; from sktransfer import ImageEmbedder, TextEmbedder; "
            "e = pickle.loads(pickle.dumps(ImageEmbedder(layer=2))); TextEmbedder(); "
            "print(e.layer, 'torch' in sys.modules)")
    assert run(code) == "2 False"


def test_import_time_is_small():
    out = run("import time; t = time.perf_counter(); import sktransfer; "
              "print(time.perf_counter() - t)")
    assert float(out) < 0.3
