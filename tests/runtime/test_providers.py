"""Execution providers: CPU is always there; "auto" falls back to it; unknown names are refused."""

from __future__ import annotations

import pytest


def test_cpu_provider_is_available():
    from flawscope.runtime import available_providers

    providers = available_providers()
    assert "CPUExecutionProvider" in providers
    assert providers[-1] == "CPUExecutionProvider"  # preference order: accelerators first


def test_auto_loads_on_what_is_installed(deployed):
    import onnxruntime as ort

    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, providers="auto")
    assert "CPUExecutionProvider" in inspector.providers
    assert set(inspector.providers) <= set(ort.get_available_providers())
    assert inspector.inspect(deployed.good[0]).outcome.value in ("pass", "review", "fail")


def test_explicit_provider_name_and_list(deployed):
    from flawscope.runtime import Inspector

    for providers in ("CPUExecutionProvider", ["CPUExecutionProvider"]):
        assert Inspector.load(deployed.path, providers=providers).providers == ["CPUExecutionProvider"]


def test_unavailable_provider_is_refused(deployed):
    from flawscope.errors import InputError
    from flawscope.runtime import Inspector

    with pytest.raises(InputError, match=r"NoSuchExecutionProvider.*available"):
        Inspector.load(deployed.path, providers=["NoSuchExecutionProvider"])
