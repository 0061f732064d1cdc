"""Test-time views: the image flipped (and turned), every view scored, the outputs averaged.

A part whose defects look the same flipped or turned (a solar cell under electroluminescence,
a tile, a steel strip) can be scored on several views of one image: the trunk and the head
run on all of them in one batch and the outputs are averaged, which removes some of the
variance a single view carries. The views are the symmetries of a square, numbered as
:func:`dihedral` applies them; the hyperparameter ``tta`` names a set of them (:data:`VIEW_SETS`).

Everything here is torch on tensors, traced into the exported graph (:class:`ViewScorer`), so
ONNX Runtime, the INT8 graph and training-time prediction run the same views and the same
averaging. How each declared output is combined depends on its kind:

* image scores and class probabilities: the mean over views;
* anomaly and defect maps: each view's map turned back onto the image (:func:`undo`), then
  the mean;
* class maps (a per-cell argmax, which cannot be averaged): the first view's, i.e. the image
  as given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flawscope.declaration import OutputKind
from flawscope.errors import InputError

# View sets by name: 0 is the image as given; 1-3 flips (left-right, up-down, both = a half
# turn); 4-7 the same after a transpose (the quarter turns and the anti-transpose).
VIEW_SETS: dict[str, tuple[int, ...]] = {
    "none": (0,),
    "flips": (0, 1, 2, 3),
    "d4": tuple(range(8)),
}
AVERAGED = (OutputKind.IMAGE_SCORE, OutputKind.CLASS_PROBS)
TURNED_BACK = (OutputKind.ANOMALY_MAP, OutputKind.DEFECT_MAP, OutputKind.FUSION_MAPS)
FIRST_VIEW = (OutputKind.CLASS_MAP,)


def view_set(name: str) -> tuple[int, ...]:
    """The views of a ``tta`` value.

    Raises:
        InputError: naming ``tta``, for an unknown set.
    """
    if name not in VIEW_SETS:
        raise InputError("tta", f"must be one of {list(VIEW_SETS)}, got {name!r}")
    return VIEW_SETS[name]


def check_canvas(views: Sequence[int], height: int, width: int) -> None:
    """Refuse transposed views on a canvas that is not square (they would change its shape).

    Raises:
        InputError: naming ``tta``.
    """
    if height != width and any(k & 4 for k in views):
        raise InputError(
            "tta",
            f"'d4' turns the image by quarter turns, which needs a square canvas, not {height} x {width}; "
            "use 'flips'",
        )


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` (0-7) of ``(..., H, W)``.

    Transposed if ``k & 4``, then flipped left-right if ``k & 1`` and up-down if ``k & 2``.
    """
    if k & 4:
        x = x.transpose(-1, -2)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    return x


def undo(x: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`dihedral`: a map of view ``k`` turned back onto the image."""
    if k & 2:
        x = x.flip(-2)
    if k & 1:
        x = x.flip(-1)
    if k & 4:
        x = x.transpose(-1, -2)
    return x


def expand(x: torch.Tensor, views: Sequence[int]) -> torch.Tensor:
    """``(B, C, H, W)`` to ``(V * B, C, H, W)``: every view of the batch, view after view."""
    if tuple(views) == (0,):
        return x
    return torch.cat([dihedral(x, k) for k in views], dim=0)


def combine(
    outputs: torch.Tensor | tuple[torch.Tensor, ...],
    views: Sequence[int],
    kinds: Sequence[OutputKind],
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Outputs for ``V * B`` views (as :func:`expand` stacked them) to outputs for ``B`` images.

    Args:
        outputs: one tensor per declared output (a single tensor for one output), batch ``V * B``.
        views: the views, in the order :func:`expand` used.
        kinds: each output's kind, in order.

    Returns:
        The same outputs with batch ``B`` (a single tensor stays a single tensor).

    Raises:
        InputError: for an output kind that views cannot combine (boxes).
    """
    if tuple(views) == (0,):
        return outputs
    single = isinstance(outputs, torch.Tensor)
    values = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
    n = len(views)
    combined = []
    for value, kind in zip(values, kinds, strict=True):
        per_view = value.reshape(n, -1, *value.shape[1:])
        if kind in AVERAGED:
            combined.append(per_view.mean(dim=0))
        elif kind in TURNED_BACK:
            combined.append(torch.stack([undo(per_view[i], k) for i, k in enumerate(views)]).mean(dim=0))
        elif kind in FIRST_VIEW:
            combined.append(undo(per_view[0], views[0]))
        else:
            raise InputError("tta", f"test-time views cannot combine a {kind.value} output; use 'none'")
    return combined[0] if single else tuple(combined)


class ViewScorer(nn.Module):
    """``(B, 3, H, W)`` canvas to the declared outputs, averaged over test-time views.

    The exported graph of a model with ``tta`` set: the views go through ``embedder`` and
    ``head`` as one batch of ``V * B`` and :func:`combine` averages them.

    Args:
        embedder: canvas to features.
        head: features to the declared outputs.
        views: the views (:data:`VIEW_SETS`).
        kinds: the declared outputs' kinds, in order.
    """

    def __init__(
        self, embedder: nn.Module, head: nn.Module, views: Sequence[int], kinds: Sequence[OutputKind]
    ):
        super().__init__()
        self.embedder = embedder
        self.head = head
        self.views = tuple(views)
        self.kinds = tuple(kinds)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:  # noqa: D102
        return combine(self.head(self.embedder(expand(x, self.views))), self.views, self.kinds)


class ViewHead(nn.Module):
    """The head side of :class:`ViewScorer` alone: ``(V * B, C, h, w)`` features to ``B`` outputs.

    For graphs built in two parts (the INT8 graph: a quantised embedder fed by
    :class:`ViewExpand`, then this).
    """

    def __init__(self, head: nn.Module, views: Sequence[int], kinds: Sequence[OutputKind]):
        super().__init__()
        self.head = head
        self.views = tuple(views)
        self.kinds = tuple(kinds)

    def forward(self, features: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:  # noqa: D102
        return combine(self.head(features), self.views, self.kinds)


class ViewExpand(nn.Module):
    """``(B, 3, H, W)`` to ``(V * B, 3, H, W)`` (:func:`expand`), as a module to trace."""

    def __init__(self, views: Sequence[int]):
        super().__init__()
        self.views = tuple(views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return expand(x, self.views)
