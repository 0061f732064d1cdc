"""Shared helpers for the flawscope.data tests: tiny image files written on the fly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

WriteImage = Callable[..., Path]


@pytest.fixture
def write_image() -> WriteImage:
    """Write a small noisy image (any suffix OpenCV knows) and return its path."""

    def write(
        path: Path, shape: tuple[int, ...] = (32, 40), seed: int = 0, image: np.ndarray | None = None
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if image is None:
            image = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
        pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        assert cv2.imwrite(str(path), pixels), path
        return path

    return write
