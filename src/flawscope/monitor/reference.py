"""What the monitored statistics look like on the calibration parts: the reference, stored in the bundle.

Made at calibration time from the same held-out good images that set the thresholds (their image
statistics and anomaly scores), written into the manifest's ``monitor`` section
(:class:`~flawscope.manifest.MonitorSection`), and carried into the deployable bundle by
``export``. The station compares every part with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import MappingProxyType

import numpy as np

from flawscope.decide.thresholds import utc_now_iso
from flawscope.errors import InputError
from flawscope.manifest import Manifest, MonitorSection
from flawscope.monitor.imagestats import STAT_NAMES, ImageStatistics

#: The reference is the manifest's monitor section.
MonitorReference = MonitorSection
#: Models that compare each position of the part with that position's own statistics, so that a
#: part shifted in the frame looks anomalous to them (their position is charted).
POSITION_SENSITIVE_MODELS = frozenset({"padim"})
MIN_REFERENCE = 30


def _value(value: float) -> float | None:
    # 7 significant digits: the manifest stays small, and the charts do not need more.
    return None if not math.isfinite(value) else float(f"{value:.7g}")


def build_reference(
    images: Sequence[np.ndarray], scores: Sequence[float] | np.ndarray, model_name: str
) -> MonitorReference:
    """The reference of a set of held-out good images and their anomaly scores.

    Args:
        images: the calibration images.
        scores: ``(N,)`` their anomaly scores from the model being calibrated.
        model_name: the model's registry name (decides whether position is charted).

    Raises:
        InputError: for fewer than :data:`MIN_REFERENCE` images, a count mismatch, or a score
            that is not finite.
    """
    if len(images) != len(scores):
        raise InputError("monitor reference", f"{len(images)} images but {len(scores)} scores")
    if len(images) < MIN_REFERENCE:
        raise InputError(
            "monitor reference", f"needs at least {MIN_REFERENCE} calibration images, got {len(images)}"
        )
    values = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError("monitor reference", "a calibration score is NaN or infinite")
    compute = ImageStatistics()
    table = np.stack([compute(image) for image in images])
    return MonitorSection(
        version=1,
        created_at=utc_now_iso(),
        position_sensitive=model_name in POSITION_SENSITIVE_MODELS,
        stats=MappingProxyType(
            {name: tuple(_value(float(v)) for v in table[:, i]) for i, name in enumerate(STAT_NAMES)}
        ),
        scores=tuple(float(f"{s:.7g}") for s in values),
    )


def reference_of(manifest: Manifest) -> MonitorReference | None:
    """The monitoring reference stored in a bundle's manifest, if its calibration made one."""
    return manifest.monitor


def reference_values(reference: MonitorReference, name: str) -> np.ndarray:
    """One statistic's calibration values as floats (NaN where undefined)."""
    return np.array([math.nan if v is None else v for v in reference.stats.get(name, ())], dtype=np.float64)
