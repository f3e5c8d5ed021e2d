"""Planner searches compiled with ``torch.compile`` (``compile=True``): the compiled search finds the known
optimum, and a compiler that fails leaves the planner searching eagerly after one warning."""

from __future__ import annotations

import sysconfig
import warnings
from pathlib import Path

import pytest
import torch

from tests.test_planners import PointMass, make

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: 1 torch thread, restored after


def _compile_toolchain_missing() -> str | None:
    """Why torch.compile cannot build CPU kernels here (no C++ compiler, no Python headers), or None."""
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        return "torch.compile's CPU kernels need Python's headers (Python.h)"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        get_cpp_compiler()
    except Exception:  # inductor raises its own error types when no compiler is found
        return "torch.compile on the CPU needs a C++ compiler (g++)"
    return None


class TracedPointMass(PointMass):
    """A ``PointMass`` that records whether ``imagine`` ran inside ``torch.compile``'s tracing."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.compiling = set()

    def imagine(self, state, horizon, actions=None, policy=None):
        self.compiling.add(torch.compiler.is_compiling())
        return super().imagine(state, horizon, actions, policy)


@pytest.mark.skipif(_compile_toolchain_missing() is not None, reason=str(_compile_toolchain_missing()))
def test_compiled_search_finds_the_optimum_of_each_env():
    torch.manual_seed(4)
    model = TracedPointMass(target=0.5)  # from x0 the optimum is a = (0.5 − x0) / 0.1, then 0
    planner = make("mppi", action_dim=1, compile=True, policy=lambda features: torch.zeros_like(features))
    action = planner.plan(model, model.start(0.45, 0.5, 0.55)).squeeze(1)
    assert planner.compile and model.compiling == {True}  # ran traced, did not fall back to eager
    assert torch.allclose(action, torch.tensor([0.5, 0.0, -0.5]), atol=0.08)
    assert planner.last_info["plan"].shape == (3, 3, 1)


def test_a_search_that_cannot_be_compiled_runs_eagerly_with_a_warning(monkeypatch, tmp_path):
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/g++",))  # as on a machine without a C++ compiler
    monkeypatch.setattr(inductor, "fx_graph_cache", False)  # and nothing compiled before to fall back on
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    torch.manual_seed(1)
    model = PointMass(target=0.3, dt=1.0, decay=0.0)
    planner = make("cem", action_dim=1, compile=True)
    with pytest.warns(UserWarning, match="torch.compile of CEMPlanner's search failed.*No working C.. compiler"):
        action = planner.plan(model, model.start(0.0))
    assert not planner.compile and abs(action.item() - 0.3) < 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the next search is eager without a word
        planner.plan(model, model.start(0.0))
