"""The frozen layers run once per row and fit, at any unfreezing depth: counted at each layer
group's modules, checked against recomputing them, and with too little memory to store
them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import TINY_CNN, TINY_VIT, squares

import sktransfer.finetune.frozen as frozen
from sktransfer.backbones.timm import get_timm_backbone
from sktransfer.finetune import FineTunedImageClassifier

TINY = dict(weights="random", random_state=0, batch_size=16, augment=False)


def counting_frozen_rows(backbone_class, monkeypatch) -> dict[int, int]:
    """For each layer group, the rows its first module will run forward on while the group
    is frozen (its parameters not trainable), in every fit from now on."""
    counts: dict[int, int] = {}
    real_trainable = backbone_class.trainable

    def counted(self, n_classes, **kwargs):
        trainable = real_trainable(self, n_classes, **kwargs)
        assert trainable.stages is not None  # the family splits at its groups
        for index in range(trainable.stages.n_stages):
            group = trainable.groups[index]

            def hook(module, args, output, index=index, group=group):
                if not any(p.requires_grad for p in group):
                    rows = len(output[0] if isinstance(output, tuple) else output)
                    counts[index] = counts.get(index, 0) + rows
            first = next(owner for owner in trainable.stages.stage_modules(index)
                         if isinstance(owner, torch.nn.Module))
            first.register_forward_hook(hook)
        return trainable

    monkeypatch.setattr(backbone_class, "trainable", counted)
    return counts


def assert_trains_as_recomputed(make, X, y):
    """A fit from the stored activations and one that runs the frozen layers every epoch
    give the same losses, epoch by epoch, and the same model."""
    reused, recomputed = make(), make()
    recomputed._reuse_frozen = False
    reused.fit(X, y)
    recomputed.fit(X, y)
    for a, b in zip(reused.history_, recomputed.history_, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-6)
        if a["epoch"]:
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(reused.predict_proba(X), recomputed.predict_proba(X),
                               atol=1e-5)


@pytest.mark.parametrize("model", [TINY_CNN, TINY_VIT])
def test_no_frozen_group_runs_twice_for_a_row_in_one_fit(model, monkeypatch):
    from sktransfer.backbones.timm import TimmBackbone

    counts = counting_frozen_rows(TimmBackbone, monkeypatch)
    X, y = squares()
    fitted = FineTunedImageClassifier(model, **TINY, max_epochs=4).fit(X, y)
    assert [r["unfrozen_groups"] for r in fitted.history_] == [0, 1, 2, 3, 4]
    # every group ran frozen exactly once per row (the first pass, which also gave the
    # probe its features); recomputing would add the training and validation rows of
    # every epoch the group stayed frozen
    assert counts and set(counts.values()) == {len(X)}, counts


def test_stored_activations_train_exactly_as_recomputed_ones():
    assert_trains_as_recomputed(
        lambda: FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=4), *squares())


def test_a_fit_whose_activations_do_not_fit_recomputes_them_and_says_so(monkeypatch,
                                                                         caplog):
    X, y = squares()
    expected = FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=3).fit(X, y)
    monkeypatch.setattr(frozen, "ACTIVATION_BUDGET", 1)  # one byte: nothing fits
    with caplog.at_level(logging.INFO, logger="sktransfer"):
        squeezed = FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=3).fit(X, y)
    said = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert len(said) == 1, said  # one line, at the first depth that could not be stored
    np.testing.assert_allclose(squeezed.predict_proba(X), expected.predict_proba(X),
                               atol=1e-5)


def test_part_of_the_boundaries_fit_and_the_rest_are_recomputed_once(monkeypatch, caplog):
    """A budget for the top boundaries only: a lower one is computed when its epoch comes,
    from the inputs once more (logged), and training is the same."""
    X, y = squares()
    tiny = dict(TINY, precision="float32")  # stored as computed: 4 bytes a value
    expected = FineTunedImageClassifier(TINY_CNN, **tiny, max_epochs=5).fit(X, y)
    backbone = get_timm_backbone(TINY_CNN, "random", "cpu")
    stages = backbone.trainable(2).stages
    probe = torch.zeros((1, *backbone.data_config["input_size"]))
    n_groups = stages.n_stages
    sizes = [stages.run_stages(probe, 0, b)[0].numel() * 4 for b in range(n_groups)]
    top, second, third = sizes[n_groups - 1], sizes[n_groups - 2], sizes[n_groups - 3]
    assert third > top + second  # lower boundaries are the larger ones
    # the first pass keeps the top two; the third fits only once they are freed
    monkeypatch.setattr(frozen, "ACTIVATION_BUDGET", third * len(X))
    with caplog.at_level(logging.INFO, logger="sktransfer"):
        squeezed = FineTunedImageClassifier(TINY_CNN, **tiny, max_epochs=5).fit(X, y)
    said = [r.getMessage() for r in caplog.records if "run once more" in r.getMessage()]
    assert said, [r.getMessage() for r in caplog.records]
    np.testing.assert_allclose(squeezed.predict_proba(X), expected.predict_proba(X),
                               atol=1e-5)


def test_families_that_do_not_split_train_as_before():
    backbone = get_timm_backbone("test_convnext", "random", "cpu")
    assert backbone.trainable(2).stages is None
    X, y = squares(24)
    fitted = FineTunedImageClassifier("test_convnext", **TINY, max_epochs=2).fit(X, y)
    assert fitted.history_[-1]["unfrozen_groups"] == 2


REVIEWS = ["a wonderful film", "a moving, tender story that stays with you", "brilliant",
           "dull and slow", "a tedious mess of a script, far too long", "far too long",
           "funny, warm and sharp", "I want my two hours back"] * 4
LIKED = np.array([1, 1, 1, 0, 0, 0, 1, 0] * 4)


def test_text_layers_run_once_per_row_and_train_as_recomputed(monkeypatch):
    """The encoder's frozen layers (texts of different lengths: the stored hidden states
    are re-padded per batch) run once per row, and training matches recomputing them."""
    from sktransfer.backbones.sentence import SentenceBackbone
    from sktransfer.finetune import FineTunedTextClassifier

    def make():
        # float32: in bfloat16, oneDNN's kernels on AMX CPUs round a text's hidden states
        # differently with the number of rows in its batch (see SentenceBackbone), and a
        # training batch is not the batch that stored them
        return FineTunedTextClassifier(max_epochs=3, batch_size=8, random_state=0,
                                       precision="float32")

    counts = counting_frozen_rows(SentenceBackbone, monkeypatch)
    make().fit(REVIEWS, LIKED)
    monkeypatch.undo()
    assert counts and set(counts.values()) == {len(REVIEWS)}, counts
    assert_trains_as_recomputed(make, REVIEWS, LIKED)


# ---- decoded inputs, once per fit -----------------------------------------------------------
def counting_decodes(monkeypatch) -> dict[int, int]:
    """Decodes per item (by identity) in every fit from now on."""
    import sktransfer._images as images

    counts: dict[int, int] = {}
    real = images.load_image

    def counted(item, **kwargs):
        counts[id(item)] = counts.get(id(item), 0) + 1
        return real(item, **kwargs)

    monkeypatch.setattr(images, "load_image", counted)
    return counts


@pytest.mark.parametrize("augment", [False, True])
def test_each_image_is_decoded_once_per_fit(augment, monkeypatch):
    """The row check, the frozen pass, validation and every epoch at every depth (with
    augmentation, each epoch's random crops) read one decoding of each image."""
    X, y = squares()
    counts = counting_decodes(monkeypatch)
    tiny = dict(TINY, augment=augment)
    fitted = FineTunedImageClassifier(TINY_CNN, **tiny, max_epochs=6).fit(X, y)
    assert fitted.history_[-1]["unfrozen_groups"] == fitted.n_layer_groups_  # every depth
    assert len(counts) == len(X) and set(counts.values()) == {1}, sorted(counts.values())


def test_crops_from_kept_images_are_the_crops_of_fresh_decodes():
    from sktransfer._images import DecodedImages, Preprocessor, image_batches

    X, _ = squares(12)
    items = [np.repeat(np.repeat(x, 3, axis=0), 2, axis=1) for x in X]  # 96 x 64: not square
    prep = Preprocessor(get_timm_backbone(TINY_CNN, "random", "cpu").data_config)
    decoded = DecodedImages(augment=True)
    for rng_seed in (0, 1):
        fresh = [b.pixels for b in image_batches(items, range(12), prep, batch_size=5,
                                                 rng=np.random.default_rng(rng_seed))]
        for _ in range(2):  # the first pass keeps them, the second reads them back
            kept = [b.pixels for b in image_batches(items, range(12), prep, batch_size=5,
                                                    rng=np.random.default_rng(rng_seed),
                                                    decoded=decoded)]
            for a, b in zip(fresh, kept, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(decoded.sources) == len(decoded.crops) == 12


def test_images_beyond_the_decoded_budget_are_decoded_again(monkeypatch, caplog):
    import sktransfer._images as images

    X, y = squares()
    expected = FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=6).fit(X, y)
    _, height, width = get_timm_backbone(TINY_CNN, "random", "cpu").data_config["input_size"]
    monkeypatch.setattr(images, "DECODED_BUDGET", 5 * height * width * 3)  # five crops
    counts = counting_decodes(monkeypatch)
    with caplog.at_level(logging.INFO, logger="sktransfer"):
        squeezed = FineTunedImageClassifier(TINY_CNN, **TINY, max_epochs=6).fit(X, y)
    said = [r.getMessage() for r in caplog.records if "decoded again" in r.getMessage()]
    assert len(said) == 1, said
    assert max(counts.values()) > 1 and min(counts.values()) == 1
    np.testing.assert_allclose(squeezed.predict_proba(X), expected.predict_proba(X),
                               atol=1e-5)
