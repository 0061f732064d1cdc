"""A bank searched next to the graph (PatchCore's IVF index): written, hashed, refused when altered."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def searched(exported):
    if exported.int8:
        pytest.skip(f"{exported.name}: its search is inside the graph")
    return exported


def test_search_arrays_and_parameters_are_in_the_manifest(searched):
    from flawscope.bundle import read_bundle
    from flawscope.search.ivf import arrays_from_bytes

    deploy = read_bundle(searched.deployed).manifest.deploy
    assert deploy is not None and deploy.search is not None
    section = deploy.search
    arrays = arrays_from_bytes((searched.deployed / section.file).read_bytes(), dict(section.sha256))
    assert section.kind == "ivf_flat"
    assert section.bank_size == len(arrays.bank) == len(searched.model.memory_bank_)
    assert section.nlist == len(arrays.centroids)
    assert section.nprobe == min(searched.model.params["nprobe"], section.nlist)
    assert set(section.sha256) == {"bank", "centroids", "assign"} and section.faiss
    assert section.file in read_bundle(searched.deployed).manifest.files  # signed with the rest


def test_int8_export_of_a_search_next_to_the_graph_is_refused_in_one_line(searched, tmp_path):
    from flawscope.errors import InputError
    from flawscope.export.onnx_export import export_bundle

    with pytest.raises(InputError, match=r"int8.*export fp32"):
        export_bundle(searched.trained, tmp_path / "d", int8=True, calibration_images=searched.holdout * 2)


def test_altered_search_arrays_are_refused_by_the_runtime(searched, tmp_path):
    from flawscope.bundle import read_bundle
    from flawscope.errors import BundleError
    from flawscope.runtime import Inspector
    from flawscope.search.ivf import arrays_from_bytes, arrays_to_bytes

    copy = tmp_path / "deployed"
    shutil.copytree(searched.deployed, copy)
    section = read_bundle(copy).manifest.deploy.search
    arrays = arrays_from_bytes((copy / section.file).read_bytes())
    arrays.bank[0, 0] += 1.0
    (copy / section.file).write_bytes(arrays_to_bytes(arrays))
    with pytest.raises(BundleError, match=section.file):
        Inspector.load(copy, threads=1, allow_unsigned=True)
