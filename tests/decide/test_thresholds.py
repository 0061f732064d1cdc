import dataclasses
import json

import pytest

from flawscope.decide.thresholds import ThresholdHistory, Thresholds
from flawscope.errors import InputError


def _thresholds(**changes):
    base = {"reject": 2.0, "review": 1.5, "version": 0, "created_at": "2024-05-01T12:00:00+00:00"}
    base["method"] = "calibrated"
    base.update(changes)
    return Thresholds(**base)


def test_round_trip_through_json():
    t = _thresholds(target_frr=0.01, frr_upper_bound=0.0099, n_calibration=300, recall_ci=(0.8, 0.95))
    again = Thresholds.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again == t
    assert again.recall_ci == (0.8, 0.95)


def test_review_above_reject_is_refused():
    with pytest.raises(InputError, match="must not exceed the reject threshold") as err:
        _thresholds(review=2.5)
    assert err.value.where == "thresholds.review"


def test_equal_review_means_no_band():
    assert not _thresholds(review=2.0).has_review_band
    assert _thresholds().has_review_band


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"reject": 0.0}, "thresholds.reject"),
        ({"reject": float("inf")}, "thresholds.reject"),
        ({"review": float("nan")}, "thresholds.review"),
        ({"method": "guessed"}, "thresholds.method"),
        ({"created_at": "yesterday"}, "thresholds.created_at"),
        ({"created_at": "2024-05-01T12:00:00+02:00"}, "thresholds.created_at"),
        ({"created_at": "2024-05-01T12:00:00"}, "thresholds.created_at"),
        ({"min_area_mm2": 1.0}, "thresholds.min_area_mm2"),
        ({"max_regions": 0}, "thresholds.max_regions"),
        ({"min_area_px": -1}, "thresholds.min_area_px"),
        ({"confidence": 1.0}, "thresholds.confidence"),
        ({"target_frr": 1.5}, "thresholds.target_frr"),
        ({"recall_ci": (0.9, 0.8)}, "thresholds.recall_ci"),
    ],
)
def test_invalid_fields_are_named(changes, where):
    with pytest.raises(InputError) as err:
        _thresholds(**changes)
    assert err.value.where == where


def test_from_dict_rejects_unknown_and_missing_keys():
    data = _thresholds().to_dict()
    with pytest.raises(InputError, match="unknown key"):
        Thresholds.from_dict({**data, "rejekt": 3.0})
    del data["reject"]
    with pytest.raises(InputError, match="missing key"):
        Thresholds.from_dict(data)


def test_explicit_thresholds():
    t = Thresholds.explicit(3.0, note="set by QA", min_area_px=20)
    assert t.method == "explicit" and t.review == 3.0 and t.min_area_px == 20
    assert t.created_at.endswith("+00:00")
    with pytest.raises(InputError, match="unknown rule"):
        Thresholds.explicit(3.0, min_area=20)


def test_history_adds_versions_without_editing_old_ones():
    first = _thresholds(reject=2.0, review=2.0)
    history = ThresholdHistory()
    h1 = history.add(first)
    h2 = h1.add(_thresholds(reject=3.0, review=2.5, version=99))
    assert len(history) == 0 and len(h1) == 1 and len(h2) == 2
    assert [t.version for t in h2.versions] == [1, 2]
    assert h2.active.reject == 3.0 and h2.active.version == 2
    assert h2.get(1) is h1.get(1)  # the old version object is shared, unchanged
    assert h2.get(1).reject == 2.0
    assert first.version == 0  # the record passed in is not modified either
    with pytest.raises(dataclasses.FrozenInstanceError):
        h2.active.reject = 1.0  # type: ignore[misc]
    with pytest.raises(InputError, match="no version 7"):
        h2.get(7)


def test_history_round_trip_and_order_check():
    h = ThresholdHistory().add(_thresholds()).add(_thresholds(reject=4.0))
    again = ThresholdHistory.from_list(json.loads(json.dumps(h.to_list())))
    assert again == h
    items = h.to_list()
    with pytest.raises(InputError, match="increasing"):
        ThresholdHistory.from_list([items[1], items[0]])


def test_empty_history_has_no_active_version():
    with pytest.raises(InputError, match="no thresholds have been set"):
        _ = ThresholdHistory().active
