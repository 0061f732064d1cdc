"""Offline backbones: complete, really pretrained, identical to the reference implementation."""

from __future__ import annotations

import shutil

import pytest
import torch

from flawscope.errors import InputError, OfflineError
from flawscope.features.backbones import BACKBONES, check_pretrained, load_backbone, weights_path
from flawscope.features.nets import LiteTrunk

OFFLINE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"]


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_backbones_load_and_give_stride_8_and_16(name):
    try:
        model = load_backbone(name)
    except OfflineError as exc:
        pytest.skip(str(exc))
    f8, f16 = model(torch.zeros(1, 3, 64, 96))
    assert f8.shape[1:] == (model.channels[0], 8, 12)
    assert f16.shape[1:] == (model.channels[1], 4, 6)
    assert not any(p.requires_grad for p in model.parameters())


def test_untrained_network_is_refused():
    with pytest.raises(RuntimeError, match="untrained"):
        check_pretrained(LiteTrunk("efficientnet_lite0"), "efficientnet_lite0")


def test_altered_weights_file_is_refused(tmp_path):
    source = weights_path("efficientnet_lite0")
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="SHA-256"):
        load_backbone("efficientnet_lite0", weights_dir=tmp_path)


def test_torchvision_weights_absent_offline_give_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("FLAWSCOPE_WEIGHTS", raising=False)
    with pytest.raises(OfflineError, match=r"resnet18-f37072fd\.pth"):
        load_backbone("resnet18")


def test_unknown_backbone_names_the_choices():
    with pytest.raises(InputError, match="efficientnet_lite0"):
        load_backbone("vgg99")


def test_lite_trunk_matches_the_reference_implementation():
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch", reason="reference package not installed")
    state = torch.load(weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    reference = reference_pkg.EfficientNet.from_name("efficientnet-lite0", image_size=(96, 128))
    reference.load_state_dict(state)
    reference.eval()
    ours = load_backbone("efficientnet_lite0")
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        y = reference._swish(reference._bn0(reference._conv_stem(x)))
        for block in reference._blocks[: len(ours._blocks)]:
            y = block(y)
        _, f16 = ours(x)
    torch.testing.assert_close(f16, y, rtol=1e-4, atol=1e-4)


def test_registry_has_the_documented_backbones():
    assert set(OFFLINE) | {"resnet18", "wide_resnet50_2"} <= set(BACKBONES)
