"""What a user is told about a bundle's INT8 graph: its validation at export, in words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flawscope.manifest import DeploySection


def int8_warning(deploy: DeploySection) -> str | None:
    """What a user should know before trusting a bundle's INT8 graph (``None``: it was validated).

    Args:
        deploy: the manifest's ``deploy`` section.
    """
    if deploy.graph_int8 is None:
        return None
    info = deploy.int8
    checked = info.validation if info is not None else None
    within = info.within_tolerance if info is not None else None
    if info is None or within is None or not checked:
        return (
            "the INT8 graph was not validated on labelled parts at export, so its accuracy is unknown; "
            "deploy the fp32 graph (the default) or validate the INT8 one first"
        )
    if within is False:
        return (
            f"the INT8 graph lost {int8_loss(checked, info.max_auroc_loss)} against fp32 at export; "
            "expect lower accuracy than the fp32 graph"
        )
    return None


def int8_loss(checked: Mapping[str, Any], max_auroc_loss: float) -> str:
    """What an INT8 graph lost on labelled parts (its manifest's validation), in words."""
    parts = []
    if "auroc_loss" in checked:
        parts.append(
            f"{checked['auroc_loss']:.3f} image AUROC on {checked['n_good'] + checked['n_defect']} "
            f"labelled parts (budget {max_auroc_loss:.3f})"
        )
    if "map_loss" in checked:
        parts.append(
            f"{checked['map_loss']:.3f} mAP@0.5 on {checked['n_images']} parts with true boxes "
            f"(budget {checked['max_map_loss']:.3f})"
        )
    return " and ".join(parts)
