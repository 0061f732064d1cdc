import numpy as np
import pytest

from flawscope.decide.regions import find_regions
from flawscope.errors import InputError


def _map_with_rectangles():
    amap = np.zeros((120, 200), np.float32)
    amap[10:30, 40:90] = 2.0  # 20 x 50 = 1000 px
    amap[60:64, 150:160] = 3.0  # 4 x 10 = 40 px, higher peak
    amap[61, 152] = 5.0
    amap[100, 5] = 1.5  # a single pixel
    return amap


def test_rectangles_give_bbox_area_peak_centroid_in_map_pixels():
    regions = find_regions(_map_with_rectangles(), threshold=1.0)
    assert [r.area_px for r in regions] == [1000, 40, 1]
    big, small, dot = regions
    assert big.bbox == (40, 10, 90, 30)
    assert big.centroid == pytest.approx((64.5, 19.5))
    assert big.peak == 2.0
    assert small.bbox == (150, 60, 160, 64) and small.peak == 5.0
    assert dot.bbox == (5, 100, 6, 101)
    assert big.area_mm2 is None


def test_threshold_is_inclusive_and_filters():
    amap = _map_with_rectangles()
    assert [r.area_px for r in find_regions(amap, threshold=3.0)] == [40]
    assert find_regions(amap, threshold=5.01) == ()
    assert [r.area_px for r in find_regions(amap, 1.0, min_area_px=2)] == [1000, 40]
    assert [r.area_px for r in find_regions(amap, 1.0, max_regions=1)] == [1000]
    assert len(find_regions(amap, 1.0, max_regions=None)) == 3


def test_diagonal_pixels_are_one_region():
    amap = np.zeros((10, 10), np.float32)
    amap[2, 2] = amap[3, 3] = amap[4, 4] = 1.0
    (region,) = find_regions(amap, 0.5)
    assert region.area_px == 3 and region.bbox == (2, 2, 5, 5)


def test_area_in_mm2():
    (region,) = find_regions(_map_with_rectangles(), 1.0, max_regions=1, mm_per_px=0.1)
    assert region.area_mm2 == pytest.approx(10.0)


def test_bad_map_is_refused():
    with pytest.raises(InputError):
        find_regions(np.zeros((2, 2, 3)), 1.0)


def _brute_force(values: np.ndarray, level: float) -> list[tuple]:
    """Every 8-connected region the slow, obvious way (scipy labels each component separately)."""
    from scipy import ndimage

    labels, n = ndimage.label(values >= level, structure=np.ones((3, 3)))
    found = []
    for k in range(1, n + 1):
        ys, xs = np.nonzero(labels == k)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        found.append((bbox, len(ys), float(values[ys, xs].max()), (xs.mean(), ys.mean())))
    return sorted(found, key=lambda r: (-r[1], -r[2]))


@pytest.mark.parametrize("seed", range(12))
def test_regions_equal_a_brute_force_labelling_for_few_and_many_regions(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(8, 70)), int(rng.integers(8, 70))
    values = rng.random((height, width)).astype(np.float32)  # many small regions
    level = float(np.quantile(values, rng.uniform(0.5, 0.98)))
    if seed % 2:  # a few blobs: the few-regions path, up to one covering most of the map
        ys, xs = np.mgrid[:height, :width]
        values = np.zeros((height, width), np.float32)
        for _ in range(int(rng.integers(1, 5))):
            cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(2, 20)
            values += np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * r * r)).astype(np.float32)
        level = float(rng.uniform(0.3, 0.8))
    got = find_regions(values, level, max_regions=None)
    expected = _brute_force(values, level)
    assert len(got) == len(expected)
    for region, (bbox, area, peak, centroid) in zip(got, expected, strict=True):
        assert (region.bbox, region.area_px, region.peak) == (bbox, area, peak)
        np.testing.assert_allclose(region.centroid, centroid, atol=1e-9)


def test_a_region_covering_the_whole_map_and_one_in_a_corner():
    values = np.full((40, 50), 0.9, np.float32)
    values[7, 11] = 0.95
    (whole,) = find_regions(values, 0.5)
    assert whole.bbox == (0, 0, 50, 40) and whole.area_px == 2000 and whole.peak == pytest.approx(0.95)
    corner = np.zeros((40, 50), np.float32)
    corner[38:, 47:] = [[0.6, 0.7, 0.8], [0.9, 0.6, 0.7]]
    (found,) = find_regions(corner, 0.5)
    assert found.bbox == (47, 38, 50, 40) and found.area_px == 6 and found.peak == pytest.approx(0.9)
    assert found.centroid == pytest.approx((48.0, 38.5))
