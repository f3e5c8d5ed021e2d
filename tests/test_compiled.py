"""``torch.compile`` in planning and training: a compiled planner search (``compile=True``) finds the known
optimum, a compiler that fails leaves the planner searching eagerly after one warning, and a run with
``compile=true`` trains through a compiled world-model loss that computes the eager loss and gradients and is
compiled once, not again for each update's new values. A compiler that fails (a backend that raises stands in)
gets a warning naming what failed, the cause's first line and what happens next."""

from __future__ import annotations

import sysconfig
import warnings
from pathlib import Path

import pytest
import torch

from tests.configs import preset_config
from tests.point_mass import PointMass, make
from tests.tiny_models import RSSM_TINY, VMC_TINY, random_batch
from wm_robotics.compiled import CompiledCall
from wm_robotics.data.replay import to_torch
from wm_robotics.models.jepa import JEPAWorldModel
from wm_robotics.models.rssm import RSSMWorldModel
from wm_robotics.models.vmc import VMCWorldModel
from wm_robotics.train import Trainer

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


needs_compiler = pytest.mark.skipif(_compile_toolchain_missing() is not None, reason=str(_compile_toolchain_missing()))


@needs_compiler
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


def test_a_callers_own_error_is_raised_and_leaves_compiling_on():
    call = CompiledCall(torch.matmul, "matmul", "eagerly")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="same reduction dim|cannot be multiplied"):
            call(torch.zeros(2, 3), torch.zeros(2, 3))
    assert call.active and not [w for w in caught if "torch.compile of" in str(w.message)]  # the caller's fault


@needs_compiler
def test_a_run_with_compile_trains_through_the_compiled_loss_with_the_eager_gradients(tmp_path):
    trainer = Trainer(preset_config("tdmpc_cpu", "steps=120", "compile=true"), tmp_path)
    model = trainer.model
    model.pi = lambda features, sample=True: JEPAWorldModel.pi(model, features, False)  # the TD target's action
    # without noise: compiled code draws random numbers from its own stream, a sample would differ from eager's
    stats = torch._dynamo.utils.counters["stats"]
    before = stats["unique_graphs"]
    trainer.run()
    graphs = stats["unique_graphs"]
    assert trainer.counters["updates"] > 8 and trainer.compiled_loss.active
    assert 0 < graphs - before <= 2  # the loss up to its stats' host sync, at most one graph after: not one per update
    batch = to_torch(trainer.replay.sample(), trainer.device)
    batch["action"] = trainer.behavior.from_env(batch["action"])
    losses, grads = [], []
    for loss_fn in (model.loss, trainer.compiled_loss):
        model.zero_grad(set_to_none=True)
        loss, _, _ = loss_fn(batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert stats["unique_graphs"] == graphs
    assert torch.allclose(losses[0], losses[1], rtol=1e-4) and grads[0].shape == grads[1].shape
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-5)


@needs_compiler
@pytest.mark.parametrize("kind", ["rssm", "vmc"])
def test_a_compiled_loss_is_not_compiled_again_for_new_values(kind):
    """New batches, new loss values and the VMC's growing KL weight reuse the first compiled loss."""
    torch.manual_seed(0)
    if kind == "rssm":
        model = RSSMWorldModel({"proprio": (5,)}, 2, **RSSM_TINY)
        batches = [random_batch({"proprio": (5,)}, 2, seed=seed) for seed in range(4)]
    else:
        model = VMCWorldModel({"proprio": (5,)}, 1, kl_weight=2.0, kl_warmup=4, **VMC_TINY)
        batches = [random_batch({"proprio": (5,)}, 1, batch=3, length=6, seed=seed) for seed in range(4)]
    loss_fn = CompiledCall(model.loss, f"the {kind} loss", "computing it eagerly")
    stats = torch._dynamo.utils.counters["stats"]
    betas = []
    for index, batch in enumerate(batches):
        loss, metrics, _ = loss_fn(batch)
        loss.backward()
        model.after_step()
        betas.append(metrics.get("kl/beta"))
        if index == 0:
            graphs = stats["unique_graphs"]
    assert loss_fn.active and stats["unique_graphs"] == graphs
    assert kind == "rssm" or betas == [0.0, 0.5, 1.0, 1.5]


def failing_backend(graph_module, example_inputs):
    raise RuntimeError("no kernels today\nsecond line of the cause, left out")


@pytest.fixture
def compiles(monkeypatch) -> list[dict]:
    """torch.compile through ``failing_backend``; the keywords of each torch.compile call."""
    calls, compile_ = [], torch.compile

    def recording(fn, **kwargs):
        calls.append(kwargs)
        return compile_(fn, backend=failing_backend, **kwargs)

    monkeypatch.setattr(torch, "compile", recording)
    torch._dynamo.reset()
    yield calls
    torch._dynamo.reset()


def test_a_failed_compile_warns_with_what_why_and_what_next_then_runs_eagerly_for_good(compiles):
    call = CompiledCall(lambda x: x * 2 + 1, "the doubling", "doubling eagerly from now on")
    with pytest.warns(UserWarning) as caught:
        result = call(torch.ones(3))
    assert torch.equal(result, torch.full((3,), 3.0)) and not call.active
    message = str(caught[0].message)
    assert message.startswith("torch.compile of the doubling failed (")
    # the first two lines: who raised, then the cause's first line
    assert "(backend='failing_backend' raised: RuntimeError: no kernels today)" in message
    assert "second line" not in message
    assert message.endswith("; doubling eagerly from now on")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(call(torch.zeros(2)), torch.ones(2))  # eager, silently, and not compiled again
    assert compiles == [{"dynamic": False}]  # static shapes, compiled once


def test_a_working_compile_is_built_once_for_all_calls(monkeypatch):
    calls = []

    def eager_compile(fn, **kwargs):  # as torch.compile, without compiling anything
        calls.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", eager_compile)
    call = CompiledCall(torch.neg, "neg", "eagerly")
    for value in (1.0, 2.0, 3.0):
        assert call(torch.tensor(value)).item() == -value
    assert calls == [{"dynamic": False}] and call.active
