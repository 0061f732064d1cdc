"""Synthetic inspection datasets: textured good parts, realistic defects, exact masks.

Seeded and fast (numpy + OpenCV only), for tests, demos and benchmarks where no real data may be
shipped. :func:`write_dataset` writes the MVTec AD layout, so a synthetic set goes through the same
reader as a real one::

    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    dataset = write_dataset("/tmp/metal", SyntheticSpec(texture="brushed_metal", seed=3))

Every image has its own generator derived from ``(seed, split, defect type, index)``, so adding a
defect type or more images does not change the images already there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flawscope.data.datasets import Dataset, load_dataset
from flawscope.data.defects import DEFECT_KINDS, MASK_LEVEL, add_defect
from flawscope.data.textures import TEXTURE_FUNCTIONS, TEXTURES, finish_part
from flawscope.errors import InputError

__all__ = [
    "DEFECT_KINDS",
    "MASK_LEVEL",
    "TEXTURES",
    "SyntheticSpec",
    "add_defect",
    "make_part",
    "write_dataset",
]

logger = logging.getLogger(__name__)

MIN_SIDE = 32
_SPLIT_CODES = {"train": 0, "test_good": 1, "test_defect": 2}


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.

    Attributes:
        texture: one of ``"brushed_metal"``, ``"fabric"``, ``"wood"``, ``"printed"``.
        size: ``(height, width)`` of every image, each side at least 32.
        n_train: good training images.
        n_test_good: good test images.
        n_test_defect_per_type: defective test images of each type.
        defect_types: defect kinds, among ``"scratch"``, ``"spot"``, ``"crack"``,
            ``"contamination"``, ``"missing"``.
        grayscale: ``(H, W)`` images if True, ``(H, W, 3)`` RGB otherwise.
        seed: seed of every random choice.
    """

    texture: str = "brushed_metal"
    size: tuple[int, int] = (256, 256)
    n_train: int = 60
    n_test_good: int = 20
    n_test_defect_per_type: int = 6
    defect_types: tuple[str, ...] = DEFECT_KINDS
    grayscale: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.texture not in TEXTURES:
            raise InputError("synthetic.texture", f"must be one of {TEXTURES}, not {self.texture!r}")
        if len(self.size) != 2 or min(self.size) < MIN_SIDE:
            raise InputError(
                "synthetic.size", f"must be (height, width) with both >= {MIN_SIDE}, not {self.size}"
            )
        unknown = [k for k in self.defect_types if k not in DEFECT_KINDS]
        if unknown or len(set(self.defect_types)) != len(self.defect_types):
            raise InputError(
                "synthetic.defect_types",
                f"must be distinct kinds among {DEFECT_KINDS}, not {self.defect_types}",
            )
        if self.n_train < 1:
            raise InputError("synthetic.n_train", f"must be at least 1, not {self.n_train}")
        for name in ("n_test_good", "n_test_defect_per_type", "seed"):
            if getattr(self, name) < 0:
                raise InputError(f"synthetic.{name}", f"must be >= 0, not {getattr(self, name)}")


def make_part(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """Generate one good part.

    Args:
        rng: random generator (the part's own variation: grain, placement, lighting, noise).
        spec: texture, size and colour mode.

    Returns:
        ``(H, W)`` uint8 if ``spec.grayscale`` else ``(H, W, 3)`` uint8 RGB.
    """
    height, width = spec.size
    texture = TEXTURE_FUNCTIONS[spec.texture](rng, height, width)
    return finish_part(rng, texture, spec.grayscale)


def _rng(spec: SyntheticSpec, split: str, type_index: int, index: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, _SPLIT_CODES[split], type_index, index])


def _write_png(path: Path, image: np.ndarray) -> None:
    pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), pixels):
        raise InputError(path, "could not write the image (is the folder writable and is there space?)")


def write_dataset(root: str | os.PathLike[str], spec: SyntheticSpec | None = None) -> Dataset:
    """Generate a dataset and write it in the MVTec AD layout.

    Writes ``train/good/NNN.png``, ``test/good/NNN.png``, ``test/<type>/NNN.png`` and
    ``ground_truth/<type>/NNN_mask.png`` (0/255 PNG).

    Args:
        root: output folder; created if missing, refused if it already holds anything (nothing
            is ever overwritten).
        spec: what to generate (defaults to :class:`SyntheticSpec`'s defaults).

    Returns:
        The dataset as :func:`~flawscope.data.datasets.load_dataset` reads it back.

    Raises:
        InputError: when ``root`` is a file or a non-empty folder, or cannot be written.
    """
    spec = spec or SyntheticSpec()
    out = Path(root).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; expected a folder to write the synthetic dataset into")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(out, "folder is not empty; choose a new folder so nothing is overwritten")
    folders = [out / "train" / "good", out / "test" / "good"]
    folders += [out / part / kind for kind in spec.defect_types for part in ("test", "ground_truth")]
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create the dataset folders ({exc.strerror})") from None
    for i in range(spec.n_train):
        _write_png(out / "train" / "good" / f"{i:03d}.png", make_part(_rng(spec, "train", 0, i), spec))
    for i in range(spec.n_test_good):
        _write_png(out / "test" / "good" / f"{i:03d}.png", make_part(_rng(spec, "test_good", 0, i), spec))
    for kind in spec.defect_types:
        type_index = DEFECT_KINDS.index(kind)
        for i in range(spec.n_test_defect_per_type):
            rng = _rng(spec, "test_defect", type_index, i)
            image, mask = add_defect(make_part(rng, spec), kind, rng)
            _write_png(out / "test" / kind / f"{i:03d}.png", image)
            _write_png(out / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    logger.info("wrote synthetic %s dataset to %s", spec.texture, out)
    return load_dataset(out)
