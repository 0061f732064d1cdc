"""Gradual or sudden changes the line simulator can apply to its parts, to rehearse drift.

A :class:`Perturbation` has a kind, a full-strength amount and a profile: nothing before part
``start``, then a linear ramp to full strength over ``ramp`` parts (``ramp=0``: a step, as when a
new material batch arrives). Written ``KIND:AMOUNT[:RAMP[:START]]`` in a ``sim://`` URI
(``drift=dim:0.15:2000``).

* ``dim``: the light dims: pixel values times ``1 - amount`` (0.15: 15% less light).
* ``blur``: the focus goes: a Gaussian blur of ``amount`` pixels' standard deviation.
* ``texture``: a new material batch with a coarser surface: the fine texture (the image minus its
  Gaussian blur at 2 px) is amplified by ``1 + amount``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from flawscope.errors import InputError

KINDS = ("dim", "blur", "texture")


@dataclass(frozen=True)
class Perturbation:
    """A simulated drift; see the module docstring.

    Attributes:
        kind: ``dim``, ``blur`` or ``texture``.
        amount: full strength.
        ramp: parts over which it grows from nothing to full strength (0: at once).
        start: index of the first part affected.
    """

    kind: str
    amount: float
    ramp: int = 0
    start: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError("drift", f"unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if not self.amount >= 0 or (self.kind == "dim" and self.amount >= 1):
            raise InputError("drift", f"amount {self.amount} out of range for {self.kind}")
        if self.ramp < 0 or self.start < 0:
            raise InputError("drift", "ramp and start must be >= 0")

    @classmethod
    def parse(cls, text: str) -> Perturbation:
        """Read ``KIND:AMOUNT[:RAMP[:START]]``.

        Raises:
            InputError: naming the text, when it does not have that form.
        """
        fields = text.split(":")
        try:
            if not 2 <= len(fields) <= 4:
                raise ValueError
            return cls(
                fields[0].strip().lower(),
                float(fields[1]),
                int(fields[2]) if len(fields) > 2 else 0,
                int(fields[3]) if len(fields) > 3 else 0,
            )
        except ValueError:
            raise InputError("drift", f"{text!r} is not KIND:AMOUNT[:RAMP[:START]]") from None

    def strength(self, index: int) -> float:
        """Share of the full amount applied to part ``index`` (relative to the source's first part)."""
        if index < self.start:
            return 0.0
        if self.ramp == 0:
            return 1.0
        return min(1.0, (index - self.start + 1) / self.ramp)

    def apply(self, image: np.ndarray, index: int) -> np.ndarray:
        """The image of part ``index`` with the perturbation at that part's strength (a new array)."""
        return apply_perturbation(image, self.kind, self.amount * self.strength(index))


def apply_perturbation(image: np.ndarray, kind: str, amount: float) -> np.ndarray:
    """``image`` (uint8/uint16/float) with one perturbation of the given strength; same dtype and shape."""
    if amount <= 0:
        return image
    info_max = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    pixels = image.astype(np.float32)
    out: np.ndarray
    if kind == "dim":
        out = pixels * (1.0 - amount)
    elif kind == "blur":
        out = cv2.GaussianBlur(pixels, (0, 0), sigmaX=amount)
    elif kind == "texture":
        smooth = cv2.GaussianBlur(pixels, (0, 0), sigmaX=2.0)
        out = pixels + amount * (pixels - smooth)
    else:
        raise InputError("drift", f"unknown kind {kind!r}")
    out = out.reshape(image.shape)
    if np.issubdtype(image.dtype, np.integer):
        return np.clip(np.rint(out), 0, info_max).astype(image.dtype)
    return np.clip(out, 0.0, 1.0).astype(image.dtype)
