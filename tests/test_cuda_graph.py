"""CUDA-graph planning: GraphedCall replays, and graphed CEM / MPPI search as well as the eager one.

The CUDA tests are skipped without a GPU (CI); run them on one with ``pytest tests/test_cuda_graph.py``.
"""

from __future__ import annotations

import pytest
import torch

from tests.point_mass import KINDS, PointMass, make
from wm_robotics.behaviors.cuda_graph import GraphedCall, same_capture
from wm_robotics.behaviors.mpc_behavior import MPCBehavior
from wm_robotics.behaviors.planning import GoalObjective
from wm_robotics.models.jepa import JEPAWorldModel

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_graphed_call_needs_cuda_tensors():
    with pytest.raises(ValueError, match="needs CUDA tensors, got device cpu"):
        GraphedCall(lambda x: x + 1, [torch.zeros(3)])


def test_same_capture_compares_settings_by_value_and_objects_by_identity():
    goal = torch.zeros(2)
    key = [("iterations", 6), ("norm", "l2"), torch.Size([1, 3]), torch.float32, goal]
    assert same_capture(key, [("iterations", 6), ("norm", "l2"), torch.Size([1, 3]), torch.float32, goal])
    assert not same_capture(key, [("iterations", 1), ("norm", "l2"), torch.Size([1, 3]), torch.float32, goal])
    assert not same_capture(key, [("iterations", 6), ("norm", "l2"), torch.Size([2, 3]), torch.float32, goal])
    assert not same_capture(key, [("iterations", 6), ("norm", "l2"), torch.Size([1, 3]), torch.float32, goal.clone()])
    assert not same_capture([1], [True]) and not same_capture([1], [1, 2])  # types and lengths must match too


def test_cpu_planner_never_captures():
    model = PointMass(target=0.3, dt=1.0, decay=0.0)
    planner = make("cem", action_dim=1)
    planner.plan(model, model.start(0.0))
    assert planner.cuda_graph and planner._graph is None


@cuda
def test_graphed_call_replays_new_values_fresh_noise_and_in_place_weights():
    weight = torch.ones(4, device="cuda")
    graphed = GraphedCall(lambda x: (x * weight, torch.randn(4, device="cuda")), [torch.zeros(4, device="cuda")])
    scaled, noise_a = graphed(torch.arange(4.0, device="cuda"))
    assert torch.equal(scaled, torch.arange(4.0, device="cuda"))
    weight.mul_(2)  # an optimiser step: in place, seen by the next replay
    scaled_again, noise_b = graphed(torch.arange(4.0, device="cuda"))
    assert torch.equal(scaled_again, 2 * torch.arange(4.0, device="cuda"))
    assert not torch.equal(noise_a, noise_b)  # graph-safe RNG: new numbers every replay
    assert torch.equal(scaled, torch.arange(4.0, device="cuda"))  # outputs are copies, not the graph's memory


@cuda
@pytest.mark.parametrize("kind", KINDS)
def test_graphed_search_finds_the_optimum_and_follows_changes(kind):
    torch.manual_seed(1)
    model = PointMass(target=0.3, dt=1.0, decay=0.0, device="cuda")  # optimum: a = 0.3 at every step
    planner = make(kind, action_dim=1)
    action = planner.plan(model, model.start(0.0))
    assert planner.cuda_graph and planner._graph is not None  # captured, no eager fallback
    assert abs(action.item() - 0.3) < 0.05
    graph = planner._graph[1]
    planner.plan(model, model.start(0.0))
    assert planner._graph[1] is graph  # the same call replays the same graph
    planner.iterations = 1  # a changed setting is captured anew, not replayed stale
    planner.plan(model, model.start(0.0))
    assert planner._graph[1] is not graph
    planner.iterations = 6
    planner.objective = GoalObjective(torch.tensor([-0.4], device="cuda"))  # set_goal: a new objective
    for _ in range(3):
        action = planner.plan(model, model.start(0.0))
    assert abs(action.item() + 0.4) < 0.05
    planner.objective.goal = torch.tensor([0.6], device="cuda")  # a new goal tensor on the same objective
    for _ in range(3):
        action = planner.plan(model, model.start(0.0))
    assert abs(action.item() - 0.6) < 0.05
    actions = planner.plan(model, model.start(0.0, 0.0))  # two environments: new shapes, new graph
    assert actions.shape == (2, 1) and (actions - 0.6).abs().max() < 0.05
    assert planner.cuda_graph


@cuda
@pytest.mark.parametrize("kind", KINDS)
def test_graphed_search_reads_the_drift_updated_in_place(kind):
    torch.manual_seed(1)
    model = PointMass(dt=1.0, decay=0.0, device="cuda")  # x' = a
    drift = torch.zeros(1, device="cuda")
    planner = make(kind, action_dim=1, objective=GoalObjective(torch.tensor([0.3], device="cuda"), drift=drift))
    action = planner.plan(model, model.start(0.0))
    assert planner._graph is not None and abs(action.item() - 0.3) < 0.05
    graph = planner._graph[1]
    drift.fill_(0.1)  # as DriftEstimate.update does: h x 0.1 is added at step h, so the plan is 0.3 - 0.1 h
    for _ in range(3):
        action = planner.plan(model, model.start(0.0))
    assert planner._graph[1] is graph  # replayed, not captured anew
    torch.testing.assert_close(planner.last_info["plan"].flatten().cpu(), torch.tensor([0.2, 0.1, 0.0]),
                               atol=0.05, rtol=0)


class HostSyncObjective:
    """A reward that reads a tensor on the host (``.item()``): it cannot be captured in a graph."""

    def __call__(self, model, states, actions):
        return -(model.features(states)[:, :, 0] - 0.3).square().sum(1) * float(states["x"].abs().max().item() >= 0)


@cuda
def test_failed_capture_warns_and_plans_eagerly_on_the_callers_stream():
    torch.manual_seed(0)
    model = PointMass(target=0.3, dt=1.0, decay=0.0, device="cuda")
    planner = make("cem", action_dim=1, objective=HostSyncObjective())
    stream = torch.cuda.current_stream()
    with pytest.warns(UserWarning, match="CUDA graph capture of CEMPlanner's search failed"):
        action = planner.plan(model, model.start(0.0))
    assert torch.cuda.current_stream() == stream  # the capture stream did not leak
    assert not planner.cuda_graph and planner._graph is None
    assert abs(action.item() - 0.3) < 0.05  # the eager search still finds the optimum
    action = planner.plan(model, model.start(0.0))
    assert abs(action.item() - 0.3) < 0.05
    first, second = torch.randn(2, 4, device="cuda")  # the generator still draws after the failed capture
    assert not torch.equal(first, second)


@cuda
def test_graphed_mppi_on_a_tdmpc_model_matches_eager_statistics():
    """The tdmpc JEPA (policy prior, random Q heads) captures without falling back, and the graphed
    and eager searches agree on the plan up to sampling noise."""
    torch.manual_seed(0)
    model = JEPAWorldModel.from_size("xs", {"proprio": (5,)}, 1, horizon=3).cuda().eval()
    first = torch.zeros(1, dtype=torch.bool, device="cuda")
    with torch.no_grad():
        state = {"latent": model.encoder({"proprio": torch.ones(1, 5, device="cuda")})}
    plans = {}
    for graphed in (True, False):
        behavior = MPCBehavior(model, settings={"cuda_graph": graphed}).cuda()
        plans[graphed] = torch.stack([behavior.plan(model, state, first, sample=False) for _ in range(20)])
        assert behavior.planner.cuda_graph == graphed and (behavior.planner._graph is not None) == graphed
    assert plans[True].std() < 0.5 and plans[False].std() < 0.5  # a converged search, not noise
    assert (plans[True].mean() - plans[False].mean()).abs() < 0.2
