"""How a training step computes: at the fit's precision (autocast, depthwise convolutions in
float32 on the CPU), and in micro-batches whose gradients are the whole batch's. The CUDA
path (mixed precision, pinned memory, the float16 loss scaler) is tested where a GPU exists
(``-m gpu``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CNN, squares

import sktransfer.finetune.training as training
from sktransfer.backbones._runtime import to_device
from sktransfer.backbones.timm import get_timm_backbone
from sktransfer.finetune import (
    FineTunedImageClassifier,
    FineTunedImageEmbedder,
    FineTunedImageRegressor,
)
from sktransfer.finetune.targets import ClassTargets, LabelTargets, TaskTargets, ValueTargets

TINY = dict(weights="random", random_state=0, batch_size=16)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---- micro-batches ---------------------------------------------------------------------------
def every_kind_of_target(n: int):
    rng = np.random.default_rng(0)
    classes = ClassTargets.from_labels(rng.integers(0, 3, n), "balanced")
    labels = LabelTargets.from_indicator(rng.integers(0, 2, (n, 2)), None)
    values = ValueTargets.from_values(rng.normal(size=(n, 2)))
    frame_y = np.empty((n, 2), dtype=object)
    frame_y[:, 0] = rng.integers(0, 2, n)
    frame_y[:, 1] = rng.normal(size=n)
    frame_y[::3, 0] = None  # a task's label missing on some rows
    tasks = TaskTargets.from_columns(frame_y, tasks={"0": "classification",
                                                     "1": "regression"})
    return {"classes": classes, "labels": labels, "values": values, "tasks": tasks}


def recording_parts(monkeypatch) -> list[int]:
    """The rows of every micro-batch of every fit from now on."""
    sizes: list[int] = []
    real_parts = training.TrainingRun._parts

    def recorded(self, n_rows):
        for part in real_parts(self, n_rows):
            sizes.append(len(range(n_rows)[part]))
            yield part

    monkeypatch.setattr(training.TrainingRun, "_parts", recorded)
    return sizes


@pytest.mark.parametrize("kind", ["classes", "labels", "values", "tasks"])
def test_the_losses_of_a_batchs_parts_add_up_to_the_batchs_loss(kind):
    """Each part's loss is its share of the batch mean (class weights and missing labels
    included), so micro-batches give the batch's gradient."""
    targets = every_kind_of_target(24)[kind]
    batch = np.arange(3, 19)
    outputs = torch.randn(len(batch), targets.n_outputs,
                          generator=torch.Generator().manual_seed(0))
    whole = targets.loss(outputs, batch)
    parts = sum(targets.loss(outputs[part], batch[part], batch)
                for part in (slice(0, 1), slice(1, 8), slice(8, 16)))
    assert float(parts) == pytest.approx(float(whole), rel=1e-6)


def test_micro_batches_bound_the_rows_a_forward_keeps_and_train_as_the_whole_batch(
        monkeypatch):
    """With room for one row's activations, every training forward that keeps activations
    for a backward runs on one row; the fitted model is the one whole batches give."""
    X, y = squares()
    whole = FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=3, precision="float32",
                                     augment=True).fit(X, y)
    sizes = recording_parts(monkeypatch)
    monkeypatch.setattr(training, "TRAINING_BYTES", 1)
    parted = FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=3, precision="float32",
                                      augment=True).fit(X, y)
    assert sizes and set(sizes) == {1}
    np.testing.assert_allclose(parted.predict_proba(X), whole.predict_proba(X), atol=1e-4)


def test_batch_norm_in_training_mode_never_splits_a_batch(monkeypatch):
    X, y = squares()
    sizes = recording_parts(monkeypatch)
    monkeypatch.setattr(training, "TRAINING_BYTES", 1)
    FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=2, batchnorm="train").fit(X, y)
    assert 16 in sizes and 1 not in sizes  # batch statistics stay those of the batch


# ---- precision -------------------------------------------------------------------------------
def test_depthwise_convolutions_run_in_float32_under_cpu_autocast_only():
    net = get_timm_backbone(TINY_CNN, "random", "cpu").trainable(2).module
    depthwise = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)
                 and m.groups > 1 and m.groups == m.in_channels]
    dense = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1)
    assert depthwise
    conv = depthwise[0]
    x = torch.randn(2, conv.in_channels, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = conv(x.bfloat16())
        assert dense(torch.randn(2, dense.in_channels, 8, 8)).dtype == torch.bfloat16
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, conv(x.bfloat16().float()), rtol=0, atol=0)


def test_bfloat16_fine_tuning_learns_what_float32_learns():
    """Every forward of a bfloat16 fit runs in bfloat16 autocast; on an easy task it
    predicts as the float32 fit does."""
    X, y = squares(48)
    X_test, y_test = squares(40, seed=1)
    fits = {precision: FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=4,
                                                precision=precision).fit(X, y)
            for precision in ("float32", "bfloat16")}
    assert fits["bfloat16"].precision_ == "bfloat16"
    assert fits["float32"].precision_ == "float32"
    assert all(np.isfinite(r["val_loss"]) for r in fits["bfloat16"].history_)
    accuracies = {p: (fit.predict(X_test) == y_test).mean() for p, fit in fits.items()}
    assert accuracies["float32"] > 0.8
    assert abs(accuracies["bfloat16"] - accuracies["float32"]) <= 0.1, accuracies


def test_auto_precision_follows_the_cpu(monkeypatch):
    X, y = squares(24)
    monkeypatch.setenv("SKTRANSFER_NATIVE_BF16", "0")
    fitted = FineTunedImageRegressor(TINY_CNN, **TINY, max_epochs=1).fit(X, y * 1.0)
    assert fitted.precision_ == "float32"


def test_float16_needs_cuda():
    X, y = squares(24)
    with pytest.raises(ValueError, match=r"float16.*CUDA"):
        FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=1, precision="float16",
                                 device="cpu").fit(X, y)


def test_to_device_leaves_cpu_tensors_where_they_are():
    tensor = torch.ones(3)
    assert to_device(tensor, "cpu") is tensor


# ---- the CUDA path ---------------------------------------------------------------------------
@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("precision", ["auto", "float16", "float32"])
def test_fine_tuning_on_cuda_trains_at_every_precision(precision):
    X, y = squares(48)
    fitted = FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=3, device="cuda",
                                      precision=precision).fit(X, y)
    assert next(fitted.net_.parameters()).device.type == "cuda"
    expected = {"float16": "float16", "float32": "float32",
                "auto": "bfloat16" if torch.cuda.is_bf16_supported() else "float32"}
    assert fitted.precision_ == expected[precision]
    assert all(np.isfinite(r["val_loss"]) for r in fitted.history_)
    assert (fitted.predict(X) == y).mean() > 0.8


@pytest.mark.gpu
@CUDA
def test_cuda_batches_come_through_pinned_memory_and_match_the_cpu():
    tensor = torch.arange(12.0).reshape(3, 4)
    moved = to_device(tensor, "cuda")
    assert moved.device.type == "cuda"
    torch.testing.assert_close(moved.cpu(), tensor)
    X, y = squares(32)
    on_cpu = FineTunedImageEmbedder(TINY_CNN, **TINY, max_epochs=0, device="cpu",
                                    precision="float32").fit(X, y)
    on_gpu = FineTunedImageEmbedder(TINY_CNN, **TINY, max_epochs=0, device="cuda",
                                    precision="float32").fit(X, y)
    np.testing.assert_allclose(on_gpu.transform(X), on_cpu.transform(X), atol=1e-3)


def test_probes_run_on_one_blas_thread(monkeypatch):
    """Beside torch's OpenMP threads, OpenBLAS's own made a MiniLM probe 20x slower: the
    probes run on one BLAS thread."""
    from threadpoolctl import threadpool_info

    from sktransfer.finetune.targets import ClassTargets as Classes

    seen: list[int] = []
    real = Classes.fit_probe

    def recorded(self, *args, **kwargs):
        seen.extend(pool["num_threads"] for pool in threadpool_info()
                    if pool["user_api"] == "blas")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Classes, "fit_probe", recorded)
    FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=0).fit(*squares(24))
    assert seen and set(seen) == {1}
