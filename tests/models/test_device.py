"""``device``: the feature bank and the heads' training on a CUDA GPU; everything else on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawscope.errors import InputError
from flawscope.models import get_model_class
from flawscope.types import Targets

FAST = {"image_size": 64, "engine": "torch", "views": 0, "patience": 0, "threads": 1,
        "epochs": 6, "width": 16, "ensemble": 1}  # fmt: skip
STATION = {**FAST, "score": "fused", "anomaly": "padim", "validation": 0.3}
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "CPU", 0, None, True])
def test_a_bad_device_is_named(value):
    with pytest.raises(InputError, match="device"):
        get_model_class("segmenter")(device=value)


def test_the_cpu_is_the_default_and_older_bundles_read_as_cpu():
    seg = get_model_class("segmenter")
    assert seg().params["device"] == "cpu"
    old = {k: v for k, v in seg(device="cuda:1").hyperparameters().items() if k != "device"}
    assert seg(**seg.saved_params(old)).params["device"] == "cpu"


def test_fine_tuning_and_the_box_head_refuse_a_gpu():
    with pytest.raises(InputError, match=r"device.*fine-tuning"):
        get_model_class("classifier")(device="cuda", finetune="last")
    with pytest.raises(InputError, match=r"device.*box head"):
        get_model_class("box_detector")(device="cuda")


def test_a_gpu_that_is_not_there_is_refused_before_any_feature_is_extracted(tiny_labelled, monkeypatch):
    import flawscope.models.supervised as supervised

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted before the device was checked")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(supervised, "extract_bank", no_extraction)
    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    model = get_model_class("segmenter")(**FAST, device="cuda")
    with pytest.raises(InputError, match=r"device.*no CUDA GPU"):
        model.fit(tiny_labelled["images"], targets)


def test_the_device_runner_gives_the_cpu_features_and_leaves_the_trunk_where_it_was(tiny_labelled):
    from flawscope.data.preprocess import to_batch
    from flawscope.models.device import device_runner

    model = get_model_class("segmenter")(**FAST)
    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    model.fit(tiny_labelled["images"], targets)
    batch, _ = to_batch(tiny_labelled["bad"], model.preprocessing_)
    trunk = model._embedder()
    run = device_runner(trunk, torch.device("cpu"))
    with torch.inference_mode():
        want = trunk(torch.from_numpy(batch))
    got = run(batch)
    assert got.device.type == "cpu" and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


@GPU
def test_a_station_trained_on_the_gpu_is_a_cpu_model_that_learns_like_the_cpu_one(tiny_labelled, tmp_path):
    from tests.models.test_supervised import deployed

    from flawscope.models.io import load_model, save_model

    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    on_gpu = get_model_class("segmenter")(**STATION, device="cuda").fit(tiny_labelled["images"], targets)
    on_cpu = get_model_class("segmenter")(**STATION).fit(tiny_labelled["images"], targets)
    assert on_gpu.training_["log"]["device"] == "cuda" and on_cpu.training_["log"]["device"] == "cpu"
    assert all(t.device.type == "cpu" for t in on_gpu.state_tensors().values())
    # the same initial weights and the same batches: the first epoch's loss is the CPU's but for
    # the last bits of the arithmetic (a GPU's sums run in another order), which then add up, so
    # later epochs are close, not equal (benchmarks/device_training.py ranks the parts alike)
    first = on_gpu.training_["log"]["train_loss"][0], on_cpu.training_["log"]["train_loss"][0]
    assert first[0] == pytest.approx(first[1], rel=1e-3)
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    gpu_scores = on_gpu.predict(images).scores
    assert np.isfinite(gpu_scores).all()
    save_model(on_gpu, tmp_path / "b")
    again, _ = load_model(tmp_path / "b")
    np.testing.assert_allclose(again.predict(images).scores, gpu_scores, atol=1e-5)
    np.testing.assert_allclose(deployed(tmp_path, images).scores, gpu_scores, atol=1e-3)


@GPU
def test_synthetic_anomalies_are_drawn_alike_for_a_model_trained_on_the_gpu(tiny_labelled):
    # A mixed model trained on good parts alone learns from synthetic anomalies in feature
    # space; they are drawn on the CPU and added on the GPU, so the first epoch matches the CPU's.
    logs = [
        get_model_class("mixed")(**FAST, device=device).fit(tiny_labelled["good"]).training_["log"]
        for device in ("cuda", "cpu")
    ]
    assert [log["device"] for log in logs] == ["cuda", "cpu"]
    assert logs[0]["train_loss"][0] == pytest.approx(logs[1]["train_loss"][0], rel=1e-3)
    assert np.isfinite(logs[0]["train_loss"]).all()
