"""The box head: targets, flips, in-graph decoding (torch and ONNX Runtime alike), and learning boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flawscope.models.box_head import (
    BoxDecoder,
    box_targets,
    flip_targets,
    quality_loss,
    side_boxes,
    smoothed_boxes,
    suppression,
    voted_boxes,
)
from flawscope.models.engine import trace_to_onnx

STRIDE = 8


def test_targets_put_one_at_the_centre_and_give_small_boxes_their_cells():
    big = (0.0, 0.0, 128.0, 128.0, 0)
    small = (40.0, 40.0, 72.0, 56.0, 1)
    heat, target, weight = box_targets([small, big], 2, 16, 16, STRIDE)
    assert heat[0, 8, 8] == 1.0 and heat[1, 6, 7] == 1.0  # the cells holding (64, 64) and (56, 48)
    assert heat.max() == 1.0 and (heat >= 0).all()
    assert (heat == 1.0).sum() == 2
    # the small box's centre cell regresses the small box, a cell of the big one only the big box
    np.testing.assert_array_equal(target[:, 6, 7], [40, 40, 72, 56])
    np.testing.assert_array_equal(target[:, 8, 10], [0, 0, 128, 128])
    assert weight[6, 7] == 1.0 and 0 < weight[8, 10] < 1 and weight[15, 0] == 0.0


def test_flipped_targets_are_the_targets_of_the_flipped_boxes():
    # centres off the cells' borders (on a border, the centre's cell is a convention, not a mirror)
    boxes = [(8.0, 16.0, 42.0, 30.0, 0), (60.0, 50.0, 102.0, 120.0, 1)]
    size = 128.0
    heat, target, weight = (torch.from_numpy(a)[None] for a in box_targets(boxes, 2, 16, 16, STRIDE))
    mirrored = [(size - x1, y0, size - x0, y1, k) for x0, y0, x1, y1, k in boxes]
    want = [torch.from_numpy(a)[None] for a in box_targets(mirrored, 2, 16, 16, STRIDE)]
    got = flip_targets(heat, target, weight, size, -1)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[2], want[2])
    inside = want[2][:, None].expand_as(want[1]) > 0  # a box target means something where weighted
    assert inside.any()
    torch.testing.assert_close(got[1][inside], want[1][inside])
    twice = flip_targets(*flip_targets(heat, target, weight, size, -2), size, -2)
    for a, b in zip(twice, (heat, target, weight), strict=True):
        torch.testing.assert_close(a, b)


class _Fixed(nn.Module):
    """A stand-in head giving fixed logits (the decoder's input)."""

    def __init__(self, logits: torch.Tensor, sides: torch.Tensor):
        super().__init__()
        self.logits, self.sides = logits, sides

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits.expand(len(features), -1, -1, -1), self.sides.expand(len(features), -1, -1, -1)


def test_decoder_keeps_peaks_only_best_first_with_their_boxes_and_classes():
    logits = torch.full((1, 2, 8, 8), -10.0)
    logits[0, 0, 2, 3] = 2.0  # a peak of defect class 0
    logits[0, 0, 2, 4] = 1.0  # its neighbour: suppressed
    logits[0, 1, 6, 6] = 0.0  # a weaker peak of class 1
    sides = torch.zeros(1, 4, 8, 8)  # e^0 = one cell to each side
    decoder = BoxDecoder(_Fixed(logits, sides), STRIDE, top_k=5, class_index=torch.tensor([1, 2]))  # type: ignore[arg-type]
    out = decoder(torch.zeros(2, 3, 8, 8))
    assert out.shape == (2, 5, 6)
    first, second = out[0, 0], out[0, 1]
    cx, cy = 3.5 * STRIDE, 2.5 * STRIDE
    torch.testing.assert_close(first[:4], torch.tensor([cx - 8, cy - 8, cx + 8, cy + 8]))
    assert float(first[4]) == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert int(first[5]) == 1 and int(second[5]) == 2  # columns of `classes` (0 is good)
    assert float(second[4]) == pytest.approx(0.5)
    # the suppressed neighbour is not among the boxes; the other rows are near-zero peaks
    assert not any(abs(float(r[0]) - (4.5 * STRIDE - 8)) < 1e-6 and abs(float(r[1]) - (cy - 8)) < 1e-6
                   for r in out[0, 2:])  # fmt: skip
    assert (out[0, 2:, 4] < 1e-3).all()


def test_decoder_pads_empty_rows_with_zeros():
    logits = torch.full((1, 1, 2, 2), -50.0)
    logits[0, 0, 0, 0] = 3.0
    decoder = BoxDecoder(_Fixed(logits, torch.zeros(1, 4, 2, 2)), STRIDE, 10, torch.tensor([1]))  # type: ignore[arg-type]
    out = decoder(torch.zeros(1, 3, 2, 2))
    assert out.shape == (1, 10, 6)
    assert float(out[0, 0, 4]) > 0.9 and (out[0, 1:] == 0).all()


def test_suppression_drops_a_lower_box_of_its_class_that_overlaps_a_higher_one():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0],  # best
                           [1.0, 0.0, 11.0, 10.0],  # IoU 0.82 with the best, same class: dropped
                           [1.0, 0.0, 11.0, 10.0],  # the same box of another class: kept
                           [0.0, 0.0, 10.0, 20.0],  # IoU 0.5 with the best: kept at 0.6
                           [30.0, 30.0, 40.0, 40.0]]])  # fmt: skip
    cls = torch.tensor([[0, 0, 1, 0, 0]])
    assert suppression(boxes, cls, 0.6).tolist() == [[1.0, 0.0, 1.0, 1.0, 1.0]]
    assert suppression(boxes, cls, 0.4).tolist() == [[1.0, 0.0, 1.0, 0.0, 1.0]]
    # order matters: only an earlier (higher-scored) box drops a later one
    assert suppression(boxes.flip(1), cls.flip(1), 0.6).tolist() == [[1.0, 1.0, 1.0, 1.0, 0.0]]


def test_decoder_with_nms_zeroes_the_overlapping_peak_and_keeps_the_apart_one():
    logits = torch.full((1, 1, 8, 8), -10.0)
    logits[0, 0, 2, 2] = 2.0
    logits[0, 0, 2, 4] = 1.0  # a peak two cells away: its 8-cell-wide box overlaps the first's
    logits[0, 0, 6, 6] = 0.5  # farther: IoU 0.14
    sides = torch.full((1, 4, 8, 8), float(np.log(4.0)))
    fixed, features = _Fixed(logits, sides), torch.zeros(1, 3, 8, 8)
    kept = BoxDecoder(fixed, STRIDE, 4, torch.tensor([1]), nms_iou=1.0)(features)  # type: ignore[arg-type]
    nms = BoxDecoder(fixed, STRIDE, 4, torch.tensor([1]), nms_iou=0.5)(features)  # type: ignore[arg-type]
    assert (kept[0, :3, 4] > 0.3).all()
    assert float(nms[0, 0, 4]) == pytest.approx(float(kept[0, 0, 4]))
    # IoU 0.6 with the best: dropped; the far box moves up, only near-zero rows follow
    torch.testing.assert_close(nms[0, 1], kept[0, 2])
    assert (nms[0, :2, 4] > 0.3).all() and (nms[0, 2:, 4] < 1e-3).all()
    assert (torch.diff(nms[0, :, 4]) <= 0).all()  # best first, as the output is declared


class _WithQuality(_Fixed):
    def __init__(self, logits: torch.Tensor, sides: torch.Tensor, quality: torch.Tensor):
        super().__init__(logits, sides)
        self.q = quality

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (*super().forward(features), self.q.expand(len(features), -1, -1, -1))


def test_quality_reorders_peaks_by_their_box_s_quality():
    logits = torch.full((1, 1, 8, 8), -10.0)
    logits[0, 0, 1, 1], logits[0, 0, 6, 6] = 2.0, 1.0  # the first peak is the stronger centre
    quality = torch.zeros(1, 1, 8, 8)
    quality[0, 0, 1, 1], quality[0, 0, 6, 6] = -3.0, 3.0  # but its box is judged poor
    sides = torch.zeros(1, 4, 8, 8)
    plain = BoxDecoder(_Fixed(logits, sides), STRIDE, 2, torch.tensor([1]))(torch.zeros(1, 3, 8, 8))  # type: ignore[arg-type]
    aware = BoxDecoder(_WithQuality(logits, sides, quality), STRIDE, 2, torch.tensor([1]))(
        torch.zeros(1, 3, 8, 8)
    )  # type: ignore[arg-type]
    assert float(plain[0, 0, 0]) < float(plain[0, 1, 0])  # centre order: the (1, 1) box first
    torch.testing.assert_close(aware[0, 0, :4], plain[0, 1, :4])  # quality order: the (6, 6) box first
    expected = torch.sqrt(torch.sigmoid(torch.tensor(1.0)) * torch.sigmoid(torch.tensor(3.0)))
    assert float(aware[0, 0, 4]) == pytest.approx(float(expected))


def test_quality_loss_is_lowest_when_the_quality_says_the_box_s_iou():
    target = torch.tensor([0.0, 0.0, 16.0, 16.0]).reshape(1, 4, 1, 1).expand(1, 4, 2, 2).clone()
    pred = target.clone()
    pred[:, 2:, 0, 0] = 8.0  # one cell's box covers a quarter of its target: IoU 0.25, the rest 1.0
    weight = torch.ones(1, 2, 2)
    iou = torch.tensor([[0.25, 1.0], [1.0, 1.0]]).reshape(1, 1, 2, 2)
    right = quality_loss(torch.logit(iou.clamp(1e-4, 1 - 1e-4)), pred, target, weight)
    for wrong in (
        torch.zeros(1, 1, 2, 2),
        torch.full((1, 1, 2, 2), 4.0),
        -torch.logit(iou.clamp(1e-4, 1 - 1e-4)),
    ):
        assert float(quality_loss(wrong, pred, target, weight)) > float(right)


def test_side_weight_scales_only_the_giou_term():
    from flawscope.models.box_head import giou_loss, head_loss

    torch.manual_seed(0)
    out = (torch.randn(1, 2, 4, 4), torch.randn(1, 4, 4, 4), torch.randn(1, 1, 4, 4))
    made = box_targets([(4.0, 4.0, 20.0, 28.0, 1)], 2, 4, 4, STRIDE)
    heat, target, weight = (torch.from_numpy(t)[None] for t in made)
    one = head_loss(out, heat, target, weight, STRIDE)
    five = head_loss(out, heat, target, weight, STRIDE, 5.0)
    giou = giou_loss(side_boxes(out[1], STRIDE), target, weight)
    assert float(giou) > 0.1
    torch.testing.assert_close(five - one, 4 * giou)


def test_side_boxes_grow_with_the_logits():
    sides = torch.tensor([0.0, 0.0, float(np.log(3.0)), float(np.log(2.0))]).reshape(1, 4, 1, 1)
    box = side_boxes(sides, STRIDE)[0, :, 0, 0]
    torch.testing.assert_close(box, torch.tensor([4.0 - 8, 4.0 - 8, 4.0 + 24, 4.0 + 16]))


def test_ttfnet_weights_give_each_box_the_log_of_its_area_and_a_wider_region_more_cells():
    big = (0.0, 0.0, 128.0, 128.0, 0)
    small = (200.0, 200.0, 224.0, 216.0, 1)
    _, _, plain = box_targets([small, big], 2, 32, 32, STRIDE)
    heat, target, weight = box_targets([small, big], 2, 32, 32, STRIDE, weighting="ttfnet")
    big_cells, small_cells = target[2] == 128.0, target[2] == 224.0
    assert weight[big_cells].sum() == pytest.approx(np.log(128.0 * 128.0), rel=1e-5)
    assert weight[small_cells].sum() == pytest.approx(np.log(24.0 * 16.0), rel=1e-5)
    # the raw Gaussian gives the big box many times the small one's share; TTFNet less than twice
    assert plain[big_cells].sum() / plain[small_cells].sum() > 5
    assert weight[big_cells].sum() / weight[small_cells].sum() < 2
    wide_heat, _, wide = box_targets([small, big], 2, 32, 32, STRIDE, region=1.0)
    np.testing.assert_array_equal(wide_heat, heat)  # the centre heatmap does not change
    assert (wide > 0).sum() > (plain > 0).sum() and ((plain > 0) <= (wide > 0)).all()


def test_smoothed_boxes_are_the_class_confidence_weighted_mean_of_the_neighbours():
    boxes = torch.zeros(1, 4, 5, 5)
    boxes[0, :, 2, 2] = torch.tensor([10.0, 10.0, 20.0, 20.0])
    boxes[0, :, 2, 3] = torch.tensor([14.0, 10.0, 30.0, 24.0])
    weight = torch.full((1, 2, 5, 5), 1e-9)
    weight[0, 0, 2, 2], weight[0, 0, 2, 3] = 0.75, 0.25  # class 0 is sure of both cells
    weight[0, 1, 2, 2] = 1.0  # class 1 only of the first
    out = smoothed_boxes(boxes, weight, 3)
    assert out.shape == (1, 2, 4, 5, 5)
    torch.testing.assert_close(out[0, 0, :, 2, 2], torch.tensor([11.0, 10.0, 22.5, 21.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0, 1, :, 2, 2], boxes[0, :, 2, 2], atol=1e-4, rtol=0)
    # size 1 is every cell's own box
    torch.testing.assert_close(smoothed_boxes(boxes, weight, 1)[0, 0], boxes[0])


def test_voting_averages_a_class_s_overlapping_boxes_by_their_scores():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0],
                           [2.0, 0.0, 12.0, 10.0],  # IoU 0.67 with the first
                           [2.0, 0.0, 12.0, 10.0],  # the same box of another class
                           [30.0, 30.0, 40.0, 40.0],  # apart
                           [0.0, 0.0, 0.0, 0.0]]])  # an empty row  # fmt: skip
    scores = torch.tensor([[0.6, 0.2, 0.9, 0.5, 0.0]])
    cls = torch.tensor([[0, 0, 1, 0, 0]])
    out = voted_boxes(boxes, scores, cls, 0.5)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.5, 0.0, 10.5, 10.0]))  # (0.6 * 0 + 0.2 * 2) / 0.8
    torch.testing.assert_close(out[0, 1], out[0, 0])
    torch.testing.assert_close(out[0, 2:], boxes[0, 2:])  # the other class, the far box, the empty row
    torch.testing.assert_close(voted_boxes(boxes, scores, cls, 0.7), boxes)  # below the level: unchanged


def test_decoder_with_voting_keeps_the_nms_choice_and_moves_the_kept_box():
    logits = torch.full((1, 1, 16, 16), -10.0)
    logits[0, 0, 8, 6] = 2.0
    logits[0, 0, 8, 8] = 1.0  # overlaps the first at IoU 0.6: dropped by NMS 0.5, but it votes
    sides = torch.full((1, 4, 16, 16), float(np.log(4.0)))  # 64 px boxes, inside the canvas
    fixed, features = _Fixed(logits, sides), torch.zeros(1, 3, 16, 16)
    nms = BoxDecoder(fixed, STRIDE, 4, torch.tensor([1]), nms_iou=0.5)(features)  # type: ignore[arg-type]
    vote = BoxDecoder(fixed, STRIDE, 4, torch.tensor([1]), nms_iou=0.5, vote_iou=0.5)(features)  # type: ignore[arg-type]
    torch.testing.assert_close(vote[:, :, 4:], nms[:, :, 4:])  # same boxes kept, same confidences
    s1, s2 = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(1.0))
    shift = float(s2 / (s1 + s2) * 2 * STRIDE)  # the second peak's box is two cells to the right
    assert float(vote[0, 0, 0] - nms[0, 0, 0]) == pytest.approx(shift, abs=1e-4)
    assert float(vote[0, 0, 1]) == pytest.approx(float(nms[0, 0, 1]))


@pytest.mark.parametrize(("smooth", "vote"), [(1, 1.0), (3, 0.6), (5, 1.0)])
def test_decoding_in_onnx_runtime_gives_torch_s_boxes(smooth, vote):
    """Boxes equal within 1e-3 and the same classes, with a randomly initialised head."""
    import onnxruntime as ort

    from flawscope.models.box_head import CenterBoxHead

    torch.manual_seed(0)
    head = CenterBoxHead(24, 16, 3, quality=True).eval()
    decoder = BoxDecoder(head, STRIDE, 50, torch.tensor([1, 2, 3]), 0.6, smooth, vote).eval()
    graph = trace_to_onnx(decoder, 12, 16, "boxes", channels=24, input_name="features")  # traced at batch 2
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    other = torch.randn(3, 24, 12, 16)  # another batch size than the traced one
    got = session.run(None, {"features": other.numpy()})[0]
    with torch.inference_mode():
        want = decoder(other).numpy()
    assert got.shape == want.shape == (3, 50, 6)
    assert (want[..., 4] > 0.01).sum() >= 10
    np.testing.assert_array_equal(got[..., 5], want[..., 5])
    np.testing.assert_allclose(got[..., :5], want[..., :5], atol=1e-3, rtol=1e-5)
