"""The Backbone contract: what estimators may ask of a backbone, and that it tells the truth."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from sktransfer.backbones import Backbone, Trainable
from sktransfer.backbones._contract import ImageBackbone, TextBackbone
from sktransfer.backbones._engines import Execution, _EagerEngine
from sktransfer.backbones.sentence import get_sentence_backbone
from sktransfer.backbones.timm import get_timm_backbone

TINY = [name for name in timm.list_models("test_*")]


@pytest.mark.parametrize("name", TINY)
def test_widths_from_metadata_equal_a_real_forward_pass(name):
    backbone = get_timm_backbone(name, "random", "cpu")
    assert isinstance(backbone, ImageBackbone)
    size = tuple(backbone.data_config["input_size"])
    probe = torch.zeros((2, *size))
    poolings = ["avg", "max"] + (["cls"] if backbone.num_prefix_tokens else [])
    layers = [*range(backbone.n_layers), None]
    for pooling in poolings:
        engine = _EagerEngine(backbone, tuple(layers), pooling, Execution("torch", "float32", 1))
        out = engine(probe)
        widths = backbone.output_dims(layers, pooling)
        assert out.shape == (2, sum(widths)), (name, pooling, widths)
        for layer, width in zip(layers, widths, strict=True):
            single = _EagerEngine(backbone, (layer,), pooling,
                                  Execution("torch", "float32", 1))(probe)
            assert single.shape[1] == width, (name, layer, pooling)


@pytest.mark.parametrize("name", TINY)
def test_classify_after_embed_is_the_forward_pass(name):
    """Fine-tuning reuses stored ``embed`` features through ``classify``: the two must agree
    with the network's own forward pass."""
    backbone = get_timm_backbone(name, "random", "cpu")
    module = backbone.trainable(3).module.eval()
    torch.nn.init.normal_(module.net.get_classifier().weight)
    probe = torch.randn((2, *backbone.data_config["input_size"]))
    with torch.inference_mode():
        torch.testing.assert_close(module.classify(module.embed(probe)), module(probe))


def test_text_backbone_states_its_limits():
    backbone = get_sentence_backbone("all-MiniLM-L6-v2", "cpu", False)
    assert isinstance(backbone, TextBackbone) and isinstance(backbone, Backbone)
    assert backbone.max_seq_length == 256
    assert backbone.output_dims() == [384]


def test_trainable_copies_start_frozen_and_leave_the_shared_model_alone():
    backbone = get_timm_backbone("test_efficientnet", "random", "cpu")
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    trainable = backbone.trainable(3)
    assert isinstance(trainable, Trainable)
    assert len(trainable.groups) >= 3
    assert all(not p.requires_grad for group in trainable.groups for p in group)
    assert all(p.requires_grad for p in trainable.head)
    x = torch.zeros((2, 3, 32, 32))
    assert trainable.module(x).shape == (2, 3)
    assert trainable.module.embed(x).shape == (2, 256)
    for parameter in trainable.module.parameters():
        parameter.data.add_(1.0)
    after = backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_text_trainable_groups_are_embeddings_then_each_layer():
    backbone = get_sentence_backbone("all-MiniLM-L6-v2", "cpu", False)
    trainable = backbone.trainable(2, max_length=32)
    assert len(trainable.groups) == 1 + 6  # word embeddings, six transformer layers
    logits = trainable.module(["a fine film", "dull"])
    assert logits.shape == (2, 2)
    assert trainable.module.encoder.max_seq_length == 32
    assert backbone.model.max_seq_length == 256  # the shared model is untouched
    np.testing.assert_allclose(
        torch.nn.functional.normalize(trainable.module.embed(["a fine film"]), dim=1)
        .detach().numpy(),
        backbone.encode(["a fine film"], batch_size=1, normalize=True, precision="float32"),
        atol=1e-5)
