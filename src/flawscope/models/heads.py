"""Trained heads on the shared frozen features: segmentation, category and defect score.

:class:`DefectHead` is the learnable part, after Božič et al. 2021 ("Mixed supervision for
surface-defect detection"): a small convolutional decoder on the embedder's multi-scale features
(stride 8 and 16, fused) gives per-cell class logits (background + defect classes), and an
image head reads the decoder's features and its defect map (average and maximum) to give the
image's class logits. :class:`SupervisedHead` is what is exported: it turns the logits into the
declared outputs (temperature-scaled class probabilities, the defect score ``1 - P(good)``, the
defect-probability map, the per-cell class map), beside an optional good-parts anomaly head (a
station), all from one pass of the trunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flawscope.features.upsample import upsample_bilinear


def register_standardisation(
    module: nn.Module, channels: int, mean: torch.Tensor | None, std: torch.Tensor | None
) -> None:
    """Give a head the ``mean`` and ``inv_std`` buffers that standardise its input features.

    Buffers, not parameters: they come from the training features, are saved with the head and
    exported into its graph, and are never trained. A tiny ``std`` is clamped so that a channel
    constant in training does not blow up on a new part.

    Args:
        module: the head.
        channels: feature channels ``C``.
        mean: ``(C,)`` feature means (None: zeros, before fitting or when loading weights).
        std: ``(C,)`` feature standard deviations (None: ones).
    """
    module.register_buffer("mean", torch.zeros(channels) if mean is None else mean.float().clone())
    module.register_buffer(
        "inv_std", torch.ones(channels) if std is None else 1.0 / std.float().clamp_min(1e-3)
    )


class DefectHead(nn.Module):
    """``(B, C, h, w)`` features to ``(seg logits (B, S, h, w) or None, class logits (B, K))``.

    Args:
        channels: input feature channels ``C``.
        width: decoder channels.
        n_classes: image classes ``K`` (good included when the data has good parts).
        seg_classes: segmentation classes ``S`` (background + defect classes); 0 for none.
        context: 3x3 convolutions and a coarse (4x4-cell) context branch; ``False`` keeps the
            decoder pointwise (cheaper, no spatial context beyond the embedder's own pooling).
        mean: ``(C,)`` feature means (standardisation, from the training features).
        std: ``(C,)`` feature standard deviations.
    """

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(
        self,
        channels: int,
        width: int,
        n_classes: int,
        seg_classes: int,
        context: bool,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ):
        super().__init__()
        register_standardisation(self, channels, mean, std)
        self.context = context
        self.seg_classes = seg_classes
        self.reduce = nn.Conv2d(channels, width, 1)
        self.reduce_norm = nn.BatchNorm2d(width)
        # One 3x3 convolution and a coarse (4 x 4 cells) branch: on a two-core CPU a second full-
        # resolution 3x3 convolution made a training step 1.3x slower (0.52 -> 0.67 s, batch 16).
        kernel = 3 if context else 1
        self.body = nn.Sequential(
            nn.Conv2d(width, width, kernel, padding=kernel // 2), nn.BatchNorm2d(width), nn.ReLU()
        )
        if context:
            self.coarse = nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
            )
        self.seg = nn.Conv2d(width, seg_classes, 1) if seg_classes else None
        extra = 2 if seg_classes else 0
        self.classify = nn.Linear(2 * width + extra, n_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:  # noqa: D102
        # The standardisation is folded into the first convolution's weights: cheaper than
        # standardising the (B, C, h, w) features (two passes over the largest tensor).
        weight = self.reduce.weight * self.inv_std[None, :, None, None]
        assert self.reduce.bias is not None
        bias = self.reduce.bias - (weight[:, :, 0, 0] * self.mean[None, :]).sum(dim=1)
        x = F.relu(self.reduce_norm(F.conv2d(features, weight, bias)))
        x = self.body(x)
        if self.context:
            coarse = self.coarse(F.avg_pool2d(x, 4))
            x = x + upsample_bilinear(coarse, x.shape[-2:])
        pooled = [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]
        seg = None
        if self.seg is not None:
            seg = self.seg(x)
            defect = defect_probability(seg)
            pooled += [defect.mean(dim=(1, 2))[:, None], defect.amax(dim=(1, 2))[:, None]]
        return seg, self.classify(torch.cat(pooled, dim=1))


def defect_probability(seg: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` probability that a cell is not background, from ``(B, S, h, w)`` logits.

    In an exported graph it is computed as ``1 - 1 / sum_j exp(s_j - s_0)``, the same function
    without a ``Softmax`` node: ONNX Runtime runs a softmax over the channel axis of a 4-D map
    by transposing it there and back, which made the station's softmaxes cost nearly as much as
    its heads' convolutions (benchmarks/RESULTS.md, "The combined station", the twelfth
    session's update). The form cannot overflow into a wrong value: an ``exp`` that overflows to
    infinity gives a probability of exactly 1, and the sum is at least 1 (the ``j = 0`` term).
    Torch keeps the softmax, so training is unchanged to the bit.
    """
    if torch.onnx.is_in_onnx_export():
        return 1.0 - 1.0 / torch.exp(seg - seg[:, :1]).sum(dim=1)
    return 1.0 - torch.softmax(seg, dim=1)[:, 0]


def defect_log_odds(seg: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` log-odds that a cell is not background, from ``(B, S, h, w)`` logits.

    The logit of :func:`defect_probability`, computed from the logits so that it neither
    saturates at 1 nor rounds to 0 in float32.
    """
    return torch.logsumexp(seg[:, 1:], dim=1) - seg[:, 0]


class SupervisedHead(nn.Module):
    """The exported head: features to the declared outputs, in declared order.

    Outputs (each only when present): ``patch_scores`` (the anomaly head's), ``defect_score``
    ``(B,)``, ``class_probs`` ``(B, K)``, ``defect_map`` ``(B, h, w)``, ``class_map`` ``(B, h, w)``
    int64 (0 background, ``k`` the k-th class of ``classes``), ``fusion_maps`` ``(B, 2, h, w)``.

    Args:
        head: the trained :class:`DefectHead` (or a :class:`~flawscope.models.ensemble.HeadEnsemble`).
        temperature: divides the class logits before the softmax (fitted on validation data).
        good_index: column of ``"good"`` in the class probabilities, or ``None``.
        seg_to_class: ``(S,)`` class index of each segmentation class (0 for background).
        class_map: give the class map output.
        anomaly: a good-parts anomaly head (``(B, C, h, w)`` to ``(B, h, w)``), or ``None``.
        fusion: ``(2, 3)`` means and standard deviations of :meth:`evidence` on good parts, or
            ``None``. When given, ``defect_score`` is the sum of the three standardised pieces
            of evidence (unbounded, higher is more defective) instead of ``1 - P(good)``.
        margin: with ``fusion``, ``None`` takes the two maps' peaks over the whole canvas,
            mirrored padding included (bundles from before ``fused_peaks``); a number takes them
            inside the image, that many cells away from the padding: the graph then gives the
            standardised log-odds as ``defect_score`` and the standardised maps as a last
            output, ``fusion_maps`` ``(B, 2, h, w)``, whose in-image peaks the finishing adds
            (:func:`~flawscope.data.outputs.finish_outputs`; the graph does not know where the
            image lies in the canvas).
        map_log_odds: with ``fusion``, the defect map's evidence is its peak log-odds
            (:func:`defect_log_odds`) instead of its peak probability (bundles from before
            ``fused_defect``); the ``defect_map`` output stays a probability either way.
    """

    seg_to_class: torch.Tensor
    fusion: torch.Tensor

    def __init__(
        self,
        head: nn.Module,
        temperature: float,
        good_index: int | None,
        seg_to_class: torch.Tensor | None,
        class_map: bool,
        anomaly: nn.Module | None = None,
        fusion: torch.Tensor | None = None,
        margin: int | None = None,
        map_log_odds: bool = False,
    ):
        super().__init__()
        self.head = head
        self.temperature = float(temperature)
        self.good_index = good_index
        self.with_class_map = class_map
        self.anomaly = anomaly
        self.register_buffer(
            "seg_to_class", torch.zeros(1, dtype=torch.long) if seg_to_class is None else seg_to_class
        )
        self.fused = fusion is not None
        self.margin = margin
        self.in_image = margin is not None
        self.map_log_odds = map_log_odds
        self.register_buffer("fusion", torch.zeros(2, 3) if fusion is None else fusion.float().clone())

    def evidence(
        self,
        logits: torch.Tensor,
        seg: torch.Tensor | None,
        anomaly_map: torch.Tensor | None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, 3)``: log-odds of a defect, the anomaly map's peak and the defect map's peak.

        The defect map's peak is a probability, or its log-odds with ``map_log_odds``.

        The log-odds are read from the logits, not from ``1 - P(good)``, which saturates at 1 in
        float32 for confident defects and confident false alarms alike.

        Args:
            logits: ``(B, K)`` class logits.
            seg: ``(B, S, h, w)`` segmentation logits.
            anomaly_map: ``(B, h, w)`` anomaly map.
            valid: ``(B, h, w)`` bool, the cells inside the image: the peaks are taken there
                only (``None``: over the whole canvas).
        """
        assert seg is not None and anomaly_map is not None
        maps = torch.stack([anomaly_map, self.defect_evidence(seg)], dim=1)  # (B, 2, h, w)
        if valid is not None:
            maps = maps.masked_fill(~valid[:, None], float("-inf"))
        return torch.cat([self.log_odds(logits)[:, None], maps.flatten(2).amax(dim=2)], dim=1)

    def defect_evidence(self, seg: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` the defect map as the fused score reads it (probability or log-odds)."""
        return defect_log_odds(seg) if self.map_log_odds else defect_probability(seg)

    def log_odds(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B,)`` temperature-scaled log-odds of any defect class against ``good``."""
        assert self.good_index is not None
        scaled = logits / self.temperature
        good = scaled[:, self.good_index]
        others = torch.cat([scaled[:, : self.good_index], scaled[:, self.good_index + 1 :]], dim=1)
        return torch.logsumexp(others, dim=1) - good

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: D102
        outputs: list[torch.Tensor] = []
        anomaly_map = None
        if self.anomaly is not None:
            anomaly_map = self.anomaly(features)
            outputs.append(anomaly_map)
        seg, logits = self.head(features)
        probs = torch.softmax(logits / self.temperature, dim=1)
        score = torch.ones_like(probs[:, 0]) if self.good_index is None else 1.0 - probs[:, self.good_index]
        fusion_maps = None
        if self.fused and self.in_image:
            assert seg is not None and anomaly_map is not None
            score = (self.log_odds(logits) - self.fusion[0, 0]) / self.fusion[1, 0]
            maps = torch.stack([anomaly_map, self.defect_evidence(seg)], dim=1)
            fusion_maps = (maps - self.fusion[0, 1:, None, None]) / self.fusion[1, 1:, None, None]
        elif self.fused:
            score = ((self.evidence(logits, seg, anomaly_map) - self.fusion[0]) / self.fusion[1]).sum(dim=1)
        outputs += [score, probs]
        if seg is not None:
            outputs.append(defect_probability(seg))
            if self.with_class_map:
                outputs.append(self.seg_to_class[seg.argmax(dim=1)])
        if fusion_maps is not None:
            outputs.append(fusion_maps)
        return tuple(outputs)
