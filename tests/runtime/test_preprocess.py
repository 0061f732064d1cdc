"""The runtime's preprocessing shortcut gives exactly the shared preprocessing's network input."""

from __future__ import annotations

import numpy as np
import pytest


def _variants(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (size, size), dtype=np.uint8)
    big = rng.integers(0, 256, (size * 2, size * 2, 3), dtype=np.uint8)
    return {
        "uint8 gray": gray,
        "uint8 (H, W, 1)": gray[:, :, None],
        "uint8 RGB": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "uint16 gray": rng.integers(0, 65536, (size, size), dtype=np.uint16),
        "uint16 RGB": rng.integers(0, 65536, (size, size, 3), dtype=np.uint16),
        "flipped view": gray[::-1, ::-1],
        "strided view": big[::2, ::2],
        "float32": rng.random((size, size), dtype=np.float32),
        "other size (resized)": rng.integers(0, 256, (size + 20, size - 10), dtype=np.uint8),
    }


def test_preprocess_is_bit_identical_to_the_shared_code(deployed):
    from flawscope.data.preprocess import to_batch
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    variants = _variants(inspector.preprocessing.height)
    got, got_geometries = inspector.preprocess(list(variants.values()))
    want, want_geometries = to_batch(list(variants.values()), inspector.preprocessing)
    for index, name in enumerate(variants):
        assert np.array_equal(got[index], want[index]), name
    assert got_geometries == want_geometries


def test_shortcut_steps_aside_when_preprocessing_is_not_per_pixel(deployed, monkeypatch):
    """If the shared preprocessing ever stops being a per-pixel map, the runtime must follow it."""
    import flawscope.runtime.canvas as canvas
    import flawscope.runtime.inspector as module
    from flawscope.data.preprocess import to_canvas

    def centred(image, config):  # a whole-image operation: no lookup table can reproduce it
        tensor, geometry = to_canvas(image, config)
        return tensor - tensor.mean(), geometry

    monkeypatch.setattr(module, "to_canvas", centred)  # the general path
    monkeypatch.setattr(canvas, "to_canvas", centred)  # what the lookup tables are built from
    inspector = module.Inspector.load(deployed.path, threads=2)
    image = _variants(inspector.preprocessing.height)["uint8 gray"]
    batch, _ = inspector.preprocess([image])
    np.testing.assert_array_equal(batch[0], centred(image, inspector.preprocessing)[0])
    assert inspector.lookup.tables[np.dtype(np.uint8).str] is None


def test_bad_image_at_canvas_size_is_still_refused(deployed):
    from flawscope.errors import InputError
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    size = inspector.preprocessing.height
    with pytest.raises(InputError, match="shape"):
        inspector.preprocess([np.zeros((size, size, 5), np.uint8)])
