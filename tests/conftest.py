"""Shared fixtures: real photos written as files, broken files, tiny random-weight models.

No test downloads anything: a hub lookup is made to fail loudly if one is attempted.
"""

from __future__ import annotations

import io
import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")  # plots render to files, never to a screen
# Exported ONNX graphs go to a fresh folder, never into the user's ~/.cache.
os.environ["SKTRANSFER_HOME"] = tempfile.mkdtemp(prefix="sktransfer-tests-")

# Tiny timm architectures for mechanics (random weights, no download).
TINY_CNN = "test_efficientnet"
TINY_VIT = "test_vit"


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist, each worker process gets its share of the cores for torch (and so
    for ONNX Runtime and the decode threads, which follow torch's setting), instead of every
    worker using them all."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_share_the_cores_between_workers()


@pytest.fixture
def embedded(monkeypatch):
    """How many samples each call of a frozen embedder really sends through its network: the
    encoders of both embedders are counted."""
    from sktransfer import ImageEmbedder, TextEmbedder

    calls: list[int] = []
    for cls in (ImageEmbedder, TextEmbedder):
        monkeypatch.setattr(cls, "_encoder", _counting(cls._encoder, calls))
    return calls


def _counting(real, calls):
    def spy(self, backbone, execution):
        encoder = real(self, backbone, execution)

        def counted(items, rows):
            calls.append(len(items))
            return encoder(items, rows)

        counted.execution = encoder.execution
        return counted

    return spy


def pytest_configure(config):
    """Property-based tests (marked ``fuzz``) try a bounded number of examples in the default
    run, and many more when the run selects them with ``-m fuzz``."""
    from hypothesis import settings

    settings.register_profile("default-run", max_examples=20, derandomize=True)
    settings.register_profile("fuzz", max_examples=500)
    selected = config.getoption("markexpr", "") or ""
    settings.load_profile("fuzz" if "fuzz" in selected and "not fuzz" not in selected
                          else "default-run")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a socket to the outside world fails the test at once."""
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") \
                and not host.startswith("/"):
            raise AssertionError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Real RGB photos that ship inside scikit-learn and scikit-image."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    return [*load_sample_images().images, data.coffee(), data.chelsea()]


@pytest.fixture(scope="session")
def photo_files(photos, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, photo in enumerate(photos):
        path = folder / f"photo{i}.jpg"
        Image.fromarray(photo).save(path, quality=92)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def bad_files(photo_files, tmp_path_factory) -> dict[str, Path]:
    """One file per kind of broken input, keyed by what is wrong with it."""
    folder = tmp_path_factory.mktemp("bad")
    zero = folder / "zero.jpg"
    zero.write_bytes(b"")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(photo_files[0].read_bytes()[:2000])
    text = folder / "notes.jpg"
    text.write_text("this is a text file, not a JPEG\n")
    directory = folder / "a_directory.jpg"
    directory.mkdir()
    return {
        "missing": folder / "does_not_exist.jpg",
        "zero": zero,
        "truncated": truncated,
        "text": text,
        "directory": directory,
    }


def jpeg_bytes(array: np.ndarray, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", **save_args)
    return buffer.getvalue()


def squares(n=40, seed=0):
    """Images whose class is a brighter square in the top-left corner or not, in noise."""
    rng = np.random.default_rng(seed)
    X = (rng.random((n, 32, 32, 3)) * 200).astype(np.uint8)
    y = np.arange(n) % 2
    X[y == 1, :12, :12] //= 2
    X[y == 1, :12, :12] += 100
    return X, y
