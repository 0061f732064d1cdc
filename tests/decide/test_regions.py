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
