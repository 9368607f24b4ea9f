"""Bring your own weights: headless and fine-tuned checkpoints, foreign layouts, ViTs at
another input size, timm folders, architecture arguments, preprocessing and provenance.

Every checkpoint is built here from a tiny timm architecture (or torchvision's, for its
layout) with random weights; nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest
import timm
import torch
from conftest import TINY_CNN, TINY_VIT
from PIL import Image
from safetensors.torch import save_file

from sktransfer import ImageEmbedder, LicenseWarning, WeightsReinterpretedWarning
from sktransfer.backbones._runtime import clear_loaded
from sktransfer.backbones.timm import _create, get_timm_backbone
from sktransfer.finetune import FineTunedImageClassifier

RNG = np.random.default_rng(0)
X = list(RNG.integers(0, 256, size=(3, 48, 56, 3), dtype=np.uint8))
EXACT = {"backend": "torch", "precision": "float32", "decode": "full", "device": "cpu"}
VIT_EXACT = {**EXACT, "pooling": "token"}  # test_vit's own head reads the class token


@pytest.fixture(autouse=True)
def _fresh_backbones():
    clear_loaded()
    yield
    clear_loaded()


def _trained(architecture: str, **kwargs) -> torch.nn.Module:
    """A network whose weights differ from the seeded random init the loader would build."""
    torch.manual_seed(1)
    net = timm.create_model(architecture, pretrained=False, **kwargs)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return net.eval()


def _timm_features(net: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    """Pre-logits features the way a hand-written timm loop computes them."""
    config = timm.data.resolve_model_data_config(net)
    transform = timm.data.create_transform(**config)
    batch = torch.stack([transform(Image.fromarray(image)) for image in images])
    with torch.inference_mode():
        return net.forward_head(net.forward_features(batch), pre_logits=True).numpy()


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to the resize (sktransfer resamples only the columns its crop keeps, which
    moves a few pixels by one level); a wrong input size or resampled weights are far off."""
    cosine = np.sum(got * expected, axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.99999, cosine
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=2e-3)


def _save(net: torch.nn.Module, path, drop_head: bool = False) -> str:
    state = net.state_dict()
    if drop_head:  # as saved from a network built with num_classes=0
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return str(path)


def test_a_headless_checkpoint_loads_and_gives_timms_features(tmp_path):
    net = _trained(TINY_CNN)
    path = _save(net, tmp_path / "headless.safetensors", drop_head=True)
    with pytest.warns(LicenseWarning, match="unknown licence"):
        got = ImageEmbedder(TINY_CNN, weights=path, **EXACT).fit_transform(X)
    _assert_same(got, _timm_features(net, X))


def test_a_checkpoint_with_another_head_loads_and_the_head_is_logged(tmp_path, caplog):
    net = _trained(TINY_CNN, num_classes=7)  # a user's fine-tuned 7-class model
    path = _save(net, tmp_path / "finetuned.safetensors")
    with caplog.at_level(logging.INFO, logger="sktransfer"):
        got = ImageEmbedder(TINY_CNN, weights=path, weights_license="MIT",
                            **EXACT).fit_transform(X)
    _assert_same(got, _timm_features(net, X))
    ignored = [r.getMessage() for r in caplog.records if "ignored the classifier head" in
               r.getMessage()]
    assert len(ignored) == 1 and "classifier.weight 7×" in ignored[0]


def test_another_architecture_is_refused_with_a_short_summary(tmp_path):
    folder = tmp_path / ("a" * 150)  # a long path must not make a long message
    folder.mkdir()
    path = _save(_trained("test_convnext"), folder / "convnext.safetensors")
    with pytest.raises(ValueError) as raised:
        ImageEmbedder(TINY_CNN, weights=path).fit(X)
    message = str(raised.value)
    n_backbone = len(_create(TINY_CNN).state_dict()) - 2  # without classifier.weight/bias
    assert f"0 of {n_backbone} backbone tensors matched" in message
    assert "missing (conv_stem.weight" in message and "unexpected (" in message
    assert "another architecture" in message
    assert len(message) < 1000, len(message)


def test_another_variant_names_the_wrong_shapes(tmp_path):
    path = _save(_trained(TINY_CNN, channel_multiplier=1.5), tmp_path / "wider.safetensors")
    with pytest.raises(ValueError, match=r"wrong shape \(conv_stem.weight") as raised:
        ImageEmbedder(TINY_CNN, weights=path).fit(X)
    assert "another variant" in str(raised.value) and len(str(raised.value)) < 1000


def test_torchvision_names_are_refused_with_the_hint(tmp_path):
    import torchvision

    path = tmp_path / "mobilenet_v2_torchvision.safetensors"
    save_file(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="torchvision's layout") as raised:
        ImageEmbedder("mobilenetv2_100", weights=str(path)).fit(X)
    assert "0 of " in str(raised.value) and len(str(raised.value)) < 1000


def test_a_torchvision_resnet_loads_into_timms_resnet_and_agrees_with_torchvision(tmp_path):
    """timm's ResNet keeps torchvision's names: the checkpoint fits, and timm's pre-logits
    equal torchvision's pooled features."""
    import torchvision

    torch.manual_seed(2)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(reference.state_dict(), path)
    embedder = ImageEmbedder("resnet18", weights=str(path), weights_license="BSD-3-Clause",
                             **EXACT).fit(X)
    pixels = torch.randn(2, 3, 224, 224)
    backbone = get_timm_backbone("resnet18", str(path), "cpu", license="BSD-3-Clause")
    reference.fc = torch.nn.Identity()
    with torch.inference_mode():
        ours = backbone.features(pixels.contiguous(memory_format=torch.channels_last),
                                 (None,), "avg")
        np.testing.assert_allclose(ours.numpy(), reference(pixels).numpy(), atol=1e-4)
    assert embedder.license_ == "BSD-3-Clause"


def test_timms_converter_is_used_and_what_it_changed_is_named(tmp_path):
    """An original DINOv2 checkpoint carries ``mask_token``; timm's ViT filter drops it."""
    net = _trained(TINY_VIT)
    state = {**net.state_dict(), "mask_token": torch.zeros(1, net.embed_dim)}
    path = tmp_path / "dinov2_layout.safetensors"
    save_file(state, path)
    with pytest.warns(WeightsReinterpretedWarning, match=r"1 tensors dropped \(mask_token\)"):
        got = ImageEmbedder(TINY_VIT, weights=str(path), **VIT_EXACT).fit_transform(X)
    _assert_same(got, _timm_features(net, X))


def test_batchnorm_step_counters_may_be_missing(tmp_path):
    net = _trained(TINY_CNN)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "exported.safetensors"
    save_file(state, path)
    got = ImageEmbedder(TINY_CNN, weights=str(path), **EXACT).fit_transform(X)
    _assert_same(got, _timm_features(net, X))


def test_wrapper_prefixes_are_found(tmp_path):
    """A Lightning-style checkpoint: the network under "model.", an EMA copy elsewhere."""
    net = _trained(TINY_CNN)
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    state["loss_fn.weight"] = torch.ones(3)
    path = tmp_path / "lightning.ckpt"
    torch.save({"epoch": 3, "state_dict": state}, path)
    got = ImageEmbedder(TINY_CNN, weights=str(path), **EXACT).fit_transform(X)
    _assert_same(got, _timm_features(net, X))


def test_a_vit_saved_at_another_size_runs_at_that_size_without_resampling(tmp_path):
    net = _trained(TINY_VIT, img_size=64)  # timm's default for test_vit is 160
    path = _save(net, tmp_path / "vit64.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsReinterpretedWarning)
        got = ImageEmbedder(TINY_VIT, weights=path, **VIT_EXACT).fit_transform(X)
    backbone = get_timm_backbone(TINY_VIT, path, "cpu")
    assert backbone.data_config["input_size"] == (3, 64, 64)
    assert tuple(backbone.model.patch_embed.img_size) == (64, 64)
    assert torch.equal(backbone.model.pos_embed.cpu(), net.pos_embed)  # not resampled
    config = {**timm.data.resolve_model_data_config(net), "input_size": (3, 64, 64)}
    transform = timm.data.create_transform(**config)
    batch = torch.stack([transform(Image.fromarray(image)) for image in X])
    with torch.inference_mode():
        expected = net.forward_head(net.forward_features(batch), pre_logits=True).numpy()
    _assert_same(got, expected)


def test_asking_for_another_size_resamples_with_a_warning(tmp_path):
    path = _save(_trained(TINY_VIT, img_size=64), tmp_path / "vit64.safetensors")
    with pytest.warns(WeightsReinterpretedWarning,
                      match=r"pos_embed resampled from 1×17×64 to 1×37×64"):
        embedder = ImageEmbedder(TINY_VIT, weights=path, model_args={"img_size": 96},
                                 **VIT_EXACT).fit(X)
    assert embedder.transform(X).shape == (3, 64)
    backbone = get_timm_backbone(TINY_VIT, path, "cpu", model_args={"img_size": 96})
    assert backbone.data_config["input_size"] == (3, 96, 96)


def test_a_fixed_size_vit_refuses_an_input_size_it_cannot_take():
    with pytest.raises(ValueError, match=r"pass model_args=\{'img_size': 128\}"):
        ImageEmbedder(TINY_VIT, weights="random", model_args={"dynamic_img_size": False},
                      preprocessing={"input_size": (3, 128, 128)}).fit(X)


def test_a_folder_with_model_args_and_no_input_size_works(tmp_path):
    net = _trained(TINY_VIT, img_size=64)
    timm.models.save_for_hf(net, tmp_path, model_config={"model_args": {"img_size": 64}})
    config = json.loads((tmp_path / "config.json").read_text())
    config["pretrained_cfg"].pop("input_size")
    config["pretrained_cfg"]["license"] = "cc-by-4.0"
    (tmp_path / "config.json").write_text(json.dumps(config))
    embedder = ImageEmbedder(str(tmp_path), **VIT_EXACT).fit(X)
    assert embedder.license_ == "cc-by-4.0"
    backbone = get_timm_backbone(str(tmp_path), "pretrained", "cpu")
    assert backbone.data_config["input_size"] == (3, 64, 64)
    config = {**timm.data.resolve_model_data_config(net), "input_size": (3, 64, 64)}
    transform = timm.data.create_transform(**config)
    batch = torch.stack([transform(Image.fromarray(image)) for image in X])
    with torch.inference_mode():
        expected = net.forward_head(net.forward_features(batch), pre_logits=True).numpy()
    _assert_same(embedder.transform(X), expected)


def test_preprocessing_can_be_overridden_and_changes_the_vectors(tmp_path):
    path = _save(_trained(TINY_CNN), tmp_path / "w.safetensors")
    default = ImageEmbedder(TINY_CNN, weights=path, **EXACT).fit(X)
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                "interpolation": "bilinear", "crop_pct": 1.0}
    custom = ImageEmbedder(TINY_CNN, weights=path, preprocessing=imagenet, **EXACT).fit(X)
    backbone = get_timm_backbone(TINY_CNN, path, "cpu", preprocessing=imagenet)
    assert backbone.data_config["mean"] == (0.485, 0.456, 0.406)
    assert backbone.data_config["interpolation"] == "bilinear"
    assert not np.allclose(default.transform(X), custom.transform(X))
    with pytest.raises(ValueError, match="preprocessing key 'resize' is not one of"):
        ImageEmbedder(TINY_CNN, weights=path, preprocessing={"resize": 3}).fit(X)
    for bad in ({"mean": 0.5}, {"crop_pct": "all"}, {"input_size": 224}):
        with pytest.raises(ValueError, match=f"preprocessing {next(iter(bad))}"):
            ImageEmbedder(TINY_CNN, weights=path, preprocessing=bad).fit(X)
    with pytest.raises(ValueError, match="interpolation='cubic' is not one of"):
        ImageEmbedder(TINY_CNN, weights=path, preprocessing={"interpolation": "cubic"}).fit(X)


def test_an_unknown_model_argument_is_a_clear_error():
    with pytest.raises(ValueError, match=r"timm cannot build 'test_efficientnet' with "
                                         r"model_args=.*no_such_argument"):
        ImageEmbedder(TINY_CNN, weights="random", model_args={"no_such_argument": 1}).fit(X)


def test_licence_and_source_of_a_weights_file(tmp_path):
    path = _save(_trained(TINY_CNN), tmp_path / "w.safetensors")
    with pytest.warns(LicenseWarning, match=r"from '.*w.safetensors' have an unknown licence"):
        embedder = ImageEmbedder(TINY_CNN, weights=path).fit(X)
    # timm's default tag for the architecture says apache-2.0: not the file's licence
    assert _create(TINY_CNN).pretrained_cfg["license"] == "apache-2.0"
    assert embedder.license_ == "unknown"
    assert embedder.weights_source_ == str((tmp_path / "w.safetensors").resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("error", LicenseWarning)
        told = ImageEmbedder(TINY_CNN, weights=path, weights_license="MIT").fit(X)
    assert told.license_ == "MIT" and told.weights_digest_ == embedder.weights_digest_
    random = ImageEmbedder(TINY_CNN, weights="random", weights_license="MIT").fit(X)
    assert random.license_ == "none (random weights)" and random.weights_source_.startswith(
        "random")


def test_fine_tuning_records_the_licence_and_source_of_a_weights_file(tmp_path):
    path = _save(_trained(TINY_CNN, num_classes=5), tmp_path / "w.safetensors")
    y = np.arange(12) % 2
    images = list(RNG.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8))
    with pytest.warns(LicenseWarning, match="unknown licence"):
        clf = FineTunedImageClassifier(TINY_CNN, weights=path, max_epochs=1, device="cpu",
                                       validation_fraction=0.34, random_state=0).fit(images, y)
    assert clf.license_ == "unknown"
    assert clf.weights_source_ == str((tmp_path / "w.safetensors").resolve())
    told = FineTunedImageClassifier(TINY_CNN, weights=path, weights_license="MIT", max_epochs=1,
                                    device="cpu", validation_fraction=0.34,
                                    random_state=0).fit(images, y)
    assert told.license_ == "MIT"


@pytest.mark.parametrize("model", ["vit_giant_patch14_dinov2", "eva02_large_patch14_448"])
def test_an_offline_hub_model_fails_in_under_a_second_whatever_its_size(model):
    """Measured in a fresh process after the imports, as a user's first fit would be."""
    script = (
        "import time, numpy as np, timm, torch\n"
        "import sktransfer.image\n"
        "from sktransfer import ImageEmbedder, ModelUnavailableError\n"
        "start = time.perf_counter()\n"
        "try:\n"
        f"    ImageEmbedder({model!r}).fit([np.zeros((8, 8, 3), np.uint8)])\n"
        "except ModelUnavailableError as error:\n"
        "    print(time.perf_counter() - start, 'HF_HUB_OFFLINE' in str(error))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    seconds, named = out.stdout.split()
    assert named == "True", out.stderr[-2000:]
    assert float(seconds) < 1.0, seconds


def test_a_fine_tuned_vit_from_a_checkpoint_at_its_own_size_survives_pickling(tmp_path):
    import pickle

    path = _save(_trained(TINY_VIT, img_size=64), tmp_path / "vit64.safetensors")
    y = np.arange(12) % 2
    images = list(RNG.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8))
    clf = FineTunedImageClassifier(TINY_VIT, weights=path, weights_license="MIT", max_epochs=2,
                                   device="cpu", validation_fraction=0.34,
                                   random_state=0).fit(images, y)
    assert clf.data_config_["input_size"] == (3, 64, 64) and clf.model_args_ == {"img_size": 64}
    clear_loaded()
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(again.predict_proba(images), clf.predict_proba(images),
                               atol=1e-6)
