"""compute_precision's autocast: which device and dtype it runs, no weight-cast cache on CUDA (a captured CUDA graph
must not hold casts the cache frees), none at all for fp32, and the emulated-bf16 warning at the caller's line."""

from __future__ import annotations

import warnings

import pytest
import torch

from wm_robotics import precision
from wm_robotics.precision import compute_precision, float32_output_layers, in_compute_dtype


class FakeAutocast:
    """Records how ``torch.autocast`` was called; enters as a no-op (no CUDA needed)."""

    made: list[tuple[tuple, dict]] = []

    def __init__(self, *args, **kwargs) -> None:
        FakeAutocast.made.append((args, kwargs))

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info) -> None:
        return None


@pytest.mark.parametrize("device, cache", [("cuda", False), ("cpu", True)])
@pytest.mark.parametrize("name, float32_outputs", [("bf16", True), ("bf16_full", False)])
def test_bf16_autocasts_the_device_and_caches_weight_casts_only_off_cuda(monkeypatch, device, cache, name,
                                                                          float32_outputs):
    monkeypatch.setattr(torch, "autocast", FakeAutocast)
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    FakeAutocast.made = []
    with compute_precision(torch.device(device), name):
        assert float32_output_layers() is float32_outputs
    assert FakeAutocast.made == [((device,), {"dtype": torch.bfloat16, "cache_enabled": cache})]


def test_fp32_enters_no_autocast(monkeypatch):
    monkeypatch.setattr(torch, "autocast", FakeAutocast)
    FakeAutocast.made = []
    with compute_precision(torch.device("cpu"), "fp32"):
        assert float32_output_layers()
    assert FakeAutocast.made == []


def test_the_emulated_bf16_warning_points_at_the_callers_line(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compute_precision(torch.device("cpu"), "bf16_full")
    assert len(caught) == 1 and caught[0].filename == __file__  # once per call site: the caller's, not precision.py
    assert "precision='bf16_full'" in str(caught[0].message)


def test_in_compute_dtype_casts_to_the_autocast_dtype_only_inside_autocast(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)  # no emulation warning on an AVX2 CPU
    x = torch.ones(2)
    assert in_compute_dtype(x) is x
    with compute_precision(torch.device("cpu"), "bf16"):
        assert in_compute_dtype(x).dtype == torch.bfloat16
