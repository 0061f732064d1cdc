"""A dedicated box head on the shared trunk: anchor-free centre heatmaps and box sides.

After CenterNet (Zhou et al. 2019, "Objects as Points") and TTFNet (Liu et al. 2020): on the
embedder's fused stride-8 features (the stride-16 stage upsampled into them), a small
convolutional head predicts per defect class a centre heatmap (sigmoid; trained with the
penalty-reduced focal loss against elliptical Gaussians around each box centre), and per cell
the distances from the cell's centre to the box's four sides (trained with the GIoU loss at the
cells inside each box's Gaussian, weighted by it: every such cell learns the whole box, which
trains faster on a few hundred images than regressing the size at the centre cell alone).

Decoding (:class:`BoxDecoder`) is part of the exported graph: 3x3 max-pool peak extraction, the
``top_k`` highest peaks over all classes, their boxes, and YOLACT's fast NMS among them (Bolya et
al. 2019: a box is dropped when a higher-scored box of its class overlaps it above ``nms_iou``);
so the torch-free runtime gives the same boxes as torch. Shapes: ``B`` images, ``C`` feature
channels, ``K`` defect classes, ``h x w`` the stride-8 grid, ``N = top_k``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flawscope.features.upsample import upsample_bilinear
from flawscope.models.heads import register_standardisation

# Prior of a centre in the heatmap's bias (focal-loss initialisation, Lin et al. 2017): 0.1.
HEAT_PRIOR = -2.19
# The Gaussian's spread as a share of the box's size (TTFNet's alpha / beta).
GAUSSIAN_SHARE = 0.54
# Largest log of a side distance in cells (e^5 = 148 cells, beyond any canvas here).
MAX_LOG_SIDE = 5.0


class CenterBoxHead(nn.Module):
    """``(B, C, h, w)`` features to centre logits ``(B, K, h, w)`` and side logits ``(B, 4, h, w)``.

    Args:
        channels: input feature channels ``C``.
        width: the head's channels.
        n_classes: defect classes ``K``.
        mean: ``(C,)`` feature means (standardisation, folded into the first convolution).
        std: ``(C,)`` feature standard deviations.
        quality: also predict per cell the IoU of its box with the true one (``(B, 1, h, w)``
            logits, a third output); the decoder's confidence is the geometric mean of centre
            and quality (IoU-aware scoring, as FCOS's centre-ness and VarifocalNet: a well-placed
            box outranks a poorly placed one).
    """

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(
        self,
        channels: int,
        width: int,
        n_classes: int,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        quality: bool = False,
    ):
        super().__init__()
        register_standardisation(self, channels, mean, std)
        self.reduce = nn.Conv2d(channels, width, 1)
        self.reduce_norm = nn.BatchNorm2d(width)
        # A plain and a dilated 3x3 convolution, and a coarse (4 x 4 cells) branch: NEU's boxes
        # span up to the whole canvas, so the sides need context beyond a cell's neighbours.
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.BatchNorm2d(width), nn.ReLU(),
        )  # fmt: skip
        self.coarse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.heat = nn.Conv2d(width, n_classes, 1)
        self.sides = nn.Conv2d(width, 4, 1)
        self.quality = nn.Conv2d(width, 1, 1) if quality else None
        assert self.heat.bias is not None and self.sides.bias is not None
        nn.init.constant_(self.heat.bias, HEAT_PRIOR)
        nn.init.constant_(self.sides.bias, 1.0)  # e^1 = 2.7 cells to each side at the start

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: D102
        weight = self.reduce.weight * self.inv_std[None, :, None, None]
        assert self.reduce.bias is not None
        bias = self.reduce.bias - (weight[:, :, 0, 0] * self.mean[None, :]).sum(dim=1)
        x = F.relu(self.reduce_norm(F.conv2d(features, weight, bias)))
        x = self.body(x)
        coarse = self.coarse(F.avg_pool2d(x, 4, ceil_mode=True))
        x = x + upsample_bilinear(coarse, x.shape[-2:])
        if self.quality is None:
            return self.heat(x), self.sides(x)
        return self.heat(x), self.sides(x), self.quality(x)


def cell_centres(h: int, w: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, w)`` canvas x and y of every cell's centre."""
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
    return xs[None, :].expand(h, w), ys[:, None].expand(h, w)


def side_boxes(sides: torch.Tensor, stride: int) -> torch.Tensor:
    """``(B, 4, h, w)`` side logits to ``(B, 4, h, w)`` canvas boxes ``x0, y0, x1, y1`` of every cell."""
    h, w = sides.shape[-2:]
    cx, cy = cell_centres(int(h), int(w), stride)
    dist = torch.exp(sides.clamp(max=MAX_LOG_SIDE)) * stride
    return torch.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], dim=1)


class BoxDecoder(nn.Module):
    """Peaks of the centre heatmaps to ``(B, N, 6)`` boxes (see :class:`~flawscope.declaration.OutputKind`).

    Args:
        head: the trained :class:`CenterBoxHead`.
        stride: canvas pixels per cell.
        top_k: boxes kept per image ``N``.
        class_index: ``(K,)`` index in the model's ``classes`` of each heatmap channel.
        nms_iou: a box whose IoU with a higher-scored box of its class is above this is dropped
            (its row zeroed); 1.0 keeps every peak.
        smooth: a peak's box is the mean of the boxes of its ``smooth x smooth`` neighbour cells,
            weighted by its class's confidence map (:func:`smoothed_boxes`); 1 takes the peak's own.
        vote_iou: box voting: a kept box becomes the confidence-weighted mean of the top-k boxes
            of its class whose IoU with it is at least this (:func:`voted_boxes`); 1.0 is off.
    """

    class_index: torch.Tensor

    def __init__(
        self,
        head: CenterBoxHead,
        stride: int,
        top_k: int,
        class_index: torch.Tensor,
        nms_iou: float = 1.0,
        smooth: int = 1,
        vote_iou: float = 1.0,
    ):
        super().__init__()
        self.head = head
        self.stride = stride
        self.top_k = top_k
        self.nms_iou = nms_iou
        self.smooth = smooth
        self.vote_iou = vote_iou
        self.register_buffer("class_index", class_index.float().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # The grid's size is the canvas's, fixed in an exported graph (only the batch is dynamic):
        # the tracer's warnings about sizes turned into constants say nothing a user can act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return self._decode(features)

    def _decode(self, features: torch.Tensor) -> torch.Tensor:
        out = self.head(features)
        logits, sides = out[0], out[1]
        heat = torch.sigmoid(logits)
        if len(out) > 2:
            # IoU-aware: peaks ranked by centre score x box quality; the geometric mean keeps the
            # confidences on the centre score's scale (the verdict's box level reads them).
            heat = torch.sqrt(heat * torch.sigmoid(out[2]))
        k, h, w = heat.shape[1:]
        # A peak is a cell no neighbour beats (CenterNet's max-pool NMS, no box overlap test).
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
        n = min(self.top_k, k * h * w)
        # -1 for the batch axis: the graph's batch is dynamic, the grid is the canvas's.
        scores, index = torch.topk(peaks.reshape(-1, k * h * w), n, dim=1)
        cls = torch.div(index, h * w, rounding_mode="floor")
        cell = index - cls * (h * w)
        boxes = side_boxes(sides, self.stride)
        if self.smooth > 1:
            # One box per class and cell, (B, K * h * w, 4): the top-k index addresses it directly.
            per_class = smoothed_boxes(boxes, heat, self.smooth).permute(0, 1, 3, 4, 2)
            picked = torch.gather(per_class.reshape(-1, k * h * w, 4), 1, index[..., None].expand(-1, -1, 4))
        else:
            flat = boxes.reshape(-1, 4, h * w)
            picked = torch.gather(flat, 2, cell[:, None, :].expand(-1, 4, n)).transpose(1, 2)
        # Clipped to the canvas before the overlap test (the image's own edges are applied later).
        canvas = torch.tensor([w, h, w, h], dtype=picked.dtype) * self.stride
        picked = torch.minimum(picked.clamp_min(0.0), canvas)
        keep = suppression(picked, cls, self.nms_iou) if self.nms_iou < 1.0 else None
        if self.vote_iou < 1.0:
            # Suppression decided on the boxes as found; the kept ones then take the votes.
            picked = voted_boxes(picked, scores, cls, self.vote_iou)
        if keep is not None:
            # Dropped boxes get confidence 0 and move behind the kept ones (best first, as declared).
            scores, order = torch.topk(scores * keep, n, dim=1)
            picked = torch.gather(picked, 1, order[..., None].expand(-1, -1, 4))
            cls = torch.gather(cls, 1, order)
        out = torch.cat([picked, scores[..., None], self.class_index[cls][..., None]], dim=2)
        if n < self.top_k:
            out = F.pad(out, (0, 0, 0, self.top_k - n))
        # Empty rows (no peak left) are zeros, so that which of several tied zeros topk picked
        # does not matter (torch and ONNX Runtime may pick differently).
        return out * (out[..., 4:5] > 0).to(out.dtype)


def suppression(boxes: torch.Tensor, cls: torch.Tensor, iou: float) -> torch.Tensor:
    """Fast NMS's keep mask ``(B, N)`` of ``(B, N, 4)`` boxes sorted by falling score, classes ``(B, N)``.

    Unlike greedy NMS a dropped box still drops the boxes below it; it needs no loop, so the
    exported graph has a fixed shape (Bolya et al. 2019, "YOLACT").
    """
    n = boxes.shape[1]
    # Only a higher-scored box (earlier row) of the same class can drop a box.
    overlap = class_overlap(boxes, cls) * torch.ones(n, n).triu(1)
    return (overlap.amax(dim=1) <= iou).to(boxes.dtype)


def class_overlap(boxes: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``(B, N, N)`` IoU of every pair of ``(B, N, 4)`` boxes of one class (0 across classes ``(B, N)``)."""
    x0, y0, x1, y1 = boxes.unbind(dim=2)
    iw = torch.minimum(x1[:, :, None], x1[:, None]) - torch.maximum(x0[:, :, None], x0[:, None])
    ih = torch.minimum(y1[:, :, None], y1[:, None]) - torch.maximum(y0[:, :, None], y0[:, None])
    inter = iw.clamp_min(0) * ih.clamp_min(0)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    overlap = inter / (area[:, :, None] + area[:, None, :] - inter).clamp_min(1e-6)
    return overlap * (cls[:, :, None] == cls[:, None, :]).to(overlap.dtype)


def voted_boxes(boxes: torch.Tensor, scores: torch.Tensor, cls: torch.Tensor, iou: float) -> torch.Tensor:
    """Box voting: each of ``(B, N, 4)`` boxes as the score-weighted mean of its class's overlapping boxes.

    Scores ``(B, N)``, classes ``(B, N)``; every box of the class at IoU >= ``iou`` votes (itself
    included), as in Gidaris and Komodakis 2015; a fixed-shape matrix product, no loop.
    """
    votes = (class_overlap(boxes, cls) >= iou).to(boxes.dtype) * scores[:, None, :]
    total = votes.sum(dim=2, keepdim=True)
    # A box with no vote (zero area, or an empty row) keeps its sides.
    return torch.where(total > 0, torch.bmm(votes, boxes) / total.clamp_min(1e-12), boxes)


def smoothed_boxes(boxes: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    """Per class, every cell's box as the weighted mean over its ``size x size`` neighbours.

    Args:
        boxes: ``(B, 4, h, w)`` every cell's canvas box.
        weight: ``(B, K, h, w)`` each class's confidence map.
        size: the neighbourhood's side in cells (odd).

    Returns:
        ``(B, K, 4, h, w)``: a cell's neighbours vote for its sides by how sure they are of the class.
    """
    k, h, w = weight.shape[1:]
    weighted = (weight[:, :, None] * boxes[:, None]).reshape(-1, k * 4, h, w)
    num = F.avg_pool2d(weighted, size, stride=1, padding=size // 2).reshape(-1, k, 4, h, w)
    den = F.avg_pool2d(weight, size, stride=1, padding=size // 2)[:, :, None]
    return num / den.clamp_min(1e-12)


def box_targets(
    boxes: Sequence[tuple[float, float, float, float, int]],
    n_classes: int,
    h: int,
    w: int,
    stride: int,
    weighting: str = "gaussian",
    region: float = GAUSSIAN_SHARE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets of one image from its canvas boxes ``(x0, y0, x1, y1, class k)``.

    Args:
        boxes: the image's canvas boxes.
        n_classes: defect classes ``K``.
        h: grid rows.
        w: grid columns.
        stride: canvas pixels per cell.
        weighting: a regressing cell's weight: ``"gaussian"`` its value of the box's Gaussian;
            ``"ttfnet"`` that value normalised over the box's cells and scaled by the log of its
            area (TTFNet), so that a small box's few cells weigh about as much as a large one's.
        region: the Gaussian share of the cells regressing a box (the heatmap's is
            ``GAUSSIAN_SHARE``; TTFNet's beta).

    Returns:
        ``(K, h, w)`` centre heatmap (1 at each box's centre cell, Gaussian around it, the
        maximum where boxes of a class overlap), ``(4, h, w)`` the box each cell regresses and
        ``(h, w)`` that cell's weight (0 outside every Gaussian; a smaller box wins a cell).
    """
    heat = np.zeros((n_classes, h, w), np.float32)
    target = np.zeros((4, h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    for x0, y0, x1, y1, k in sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):
        if x1 <= x0 or y1 <= y0:
            continue
        g = _gaussian((x0, y0, x1, y1), GAUSSIAN_SHARE, stride, h, w)
        heat[k] = np.maximum(heat[k], g)
        if region != GAUSSIAN_SHARE:
            g = _gaussian((x0, y0, x1, y1), region, stride, h, w)
        inside = g > 0.05
        target[:, inside] = np.array([x0, y0, x1, y1], np.float32)[:, None]
        if weighting == "ttfnet":
            weight[inside] = g[inside] / g[inside].sum() * np.log(max((x1 - x0) * (y1 - y0), 2.0))
        else:
            weight[inside] = g[inside]
    return heat, target, weight


def _gaussian(box: tuple[float, ...], share: float, stride: int, h: int, w: int) -> np.ndarray:
    """``(h, w)`` elliptical Gaussian of a canvas box, spread ``share`` of its size; 1 at its centre cell."""
    x0, y0, x1, y1 = box
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    cx, cy = (x0 + x1) / 2 / stride - 0.5, (y0 + y1) / 2 / stride - 0.5
    sx = max(share * (x1 - x0) / stride / 6, 0.3)
    sy = max(share * (y1 - y0) / stride / 6, 0.3)
    g = np.exp(-((xs - cx) ** 2) / (2 * sx**2) - (ys - cy) ** 2 / (2 * sy**2)).astype(np.float32)
    # The centre's cell: the one holding the box's centre.
    row = min(max(int((y0 + y1) / 2 // stride), 0), h - 1)
    col = min(max(int((x0 + x1) / 2 // stride), 0), w - 1)
    g[row, col] = 1.0
    return g


def flip_targets(
    heat: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, size: float, axis: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets ``(B, K, h, w)``, ``(B, 4, h, w)``, ``(B, h, w)`` of features flipped along ``axis`` (-1: x).

    ``size`` is the canvas's extent along that axis: a flipped box's sides are mirrored and swapped.
    """
    lo, hi = (0, 2) if axis == -1 else (1, 3)
    flipped = target.flip(axis).clone()
    flipped[:, lo], flipped[:, hi] = size - target.flip(axis)[:, hi], size - target.flip(axis)[:, lo]
    return heat.flip(axis), flipped, weight.flip(axis)


def focal_loss(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), per centre."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    centre = heat >= 1.0
    pos = -(torch.log(p) * (1 - p) ** 2)[centre].sum()
    neg = -(torch.log(1 - p) * p**2 * (1 - heat) ** 4)[~centre].sum()
    return (pos + neg) / centre.sum().clamp_min(1)


def _aligned_iou(p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of ``(M, 4)`` box pairs."""
    iw = (torch.minimum(p[:, 2], t[:, 2]) - torch.maximum(p[:, 0], t[:, 0])).clamp_min(0)
    ih = (torch.minimum(p[:, 3], t[:, 3]) - torch.maximum(p[:, 1], t[:, 1])).clamp_min(0)
    inter = iw * ih
    area_p = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    area_t = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    union = area_p + area_t - inter
    hull = (torch.maximum(p[:, 2], t[:, 2]) - torch.minimum(p[:, 0], t[:, 0])) * (
        torch.maximum(p[:, 3], t[:, 3]) - torch.minimum(p[:, 1], t[:, 1])
    )
    iou = inter / union.clamp_min(1e-6)
    return iou, iou - (hull - union) / hull.clamp_min(1e-6)


def giou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of ``1 - GIoU`` over cells: boxes ``(B, 4, h, w)``, weights ``(B, h, w)``."""
    keep = weight > 0
    if not bool(keep.any()):
        return pred.sum() * 0.0
    p = pred.permute(0, 2, 3, 1)[keep]
    t = target.permute(0, 2, 3, 1)[keep]
    wgt = weight[keep]
    _, giou = _aligned_iou(p, t)
    return ((1 - giou) * wgt).sum() / wgt.sum()


def quality_loss(
    logits: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Weighted BCE of ``(B, 1, h, w)`` quality logits against the IoU of each cell's box with its target.

    The IoU is taken from the boxes without their gradient: the quality learns to judge the
    sides, not to move them.
    """
    keep = weight > 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    iou, _ = _aligned_iou(pred.detach().permute(0, 2, 3, 1)[keep], target.permute(0, 2, 3, 1)[keep])
    loss = F.binary_cross_entropy_with_logits(logits[:, 0][keep], iou.clamp(0, 1), reduction="none")
    return (loss * weight[keep]).sum() / weight[keep].sum()


def head_loss(out: Sequence[torch.Tensor], heat: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
              stride: int, side_weight: float = 1.0) -> torch.Tensor:  # fmt: skip
    """The box head's training loss: centre focal loss, GIoU of the sides, the quality's BCE if any.

    ``side_weight`` multiplies the GIoU term (TTFNet's is 5).
    """
    boxes = side_boxes(out[1], stride)
    loss = focal_loss(out[0], heat) + side_weight * giou_loss(boxes, target, weight)
    if len(out) > 2:
        loss = loss + quality_loss(out[2], boxes, target, weight)
    return loss
