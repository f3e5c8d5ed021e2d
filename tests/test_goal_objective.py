"""Goal objectives (latent, decoded proprio fields, both) and offset-free drift correction, on the toy
world models of ``tests/test_planners.py``."""

from __future__ import annotations

import pytest
import torch

from tests.point_mass import KINDS, PointMass, make
from wm_robotics.behaviors.drift_estimate import DriftEstimate
from wm_robotics.behaviors.planning import GoalObjective, goal_embedding

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: 1 torch thread, restored after


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_goal_objective_drives_toward_goal(kind, norm):
    torch.manual_seed(6)
    model = PointMass(target=[0.0, 0.0], dim=2)
    goals = torch.tensor([[1.0, -0.5], [-0.4, 0.8]])  # one goal per env
    planner = make(kind, action_dim=2, horizon=5, objective=GoalObjective(goals, norm=norm))
    action = planner.plan(model, model.start([0.0, 0.0], [0.0, 0.0]))
    assert (action.sign() == goals.sign()).all() and (action.abs() > 0.5).all()
    shared = make(kind, action_dim=2, horizon=5, objective=GoalObjective(goals[0], norm=norm, terminal_only=True))
    assert (shared.plan(model, model.start([0.0, 0.0], [0.3, 0.3])).sign() == goals[0].sign()).all()


def test_goal_objective_values():
    model = PointMass(dim=2)
    states = {"x": torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])}  # (N=1, H=2, F=2)
    goal = torch.zeros(2)
    assert GoalObjective(goal)(model, states, None).item() == pytest.approx(-2.5)
    assert GoalObjective(goal, norm="l1")(model, states, None).item() == pytest.approx(-3.5)
    assert GoalObjective(goal, terminal_only=True)(model, states, None).item() == pytest.approx(-5.0)
    with pytest.raises(ValueError, match="the goal has 1 values per environment, but the planner compares 2"):
        GoalObjective(torch.zeros(1))(model, states, None)


def test_goal_objective_on_decoded_proprio_fields():
    model = PointMass(dim=2, decodes=True)  # proprio = (x, −x)
    states = {"x": torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])}  # (N=1, H=2, F=2)
    assert torch.equal(goal_embedding(model, states, torch.tensor([2, 3])), -states["x"])
    only_second = GoalObjective(torch.zeros(1), proprio_index=torch.tensor([1]))  # compares x[1] only
    assert only_second(model, states, None).item() == pytest.approx(-2.0)  # mean of |0 − 0|, |4 − 0|
    assert GoalObjective(torch.tensor([4.0]), proprio_index=torch.tensor([1]), terminal_only=True)(
        model, states, None).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="needs a model that decodes proprio"):
        goal_embedding(PointMass(dim=2), states, torch.tensor([0]))


def test_goal_objective_sums_a_fields_term_and_a_weighted_latent_term():
    model = PointMass(dim=2, decodes=True)  # proprio = (x, −x)
    states = {"x": torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])}  # (N=1, H=2, F=2)
    fields, latent = torch.tensor([2]), torch.tensor([1])  # decoded −x[0], then the feature x[1]
    assert torch.equal(goal_embedding(model, states, fields, latent), torch.stack([-states["x"][..., 0],
                                                                                  states["x"][..., 1]], -1))
    both = GoalObjective(torch.zeros(2), proprio_index=fields, latent_index=latent, latent_weight=2.0)
    assert both(model, states, None).item() == pytest.approx(-(0 + (3 + 2 * 4)) / 2)  # DINO-WM: fields + w · latent
    assert torch.equal(goal_embedding(model, states, latent_index=latent), states["x"][..., 1:])
    with pytest.raises(ValueError, match="latent_weight must be >= 0"):
        GoalObjective(torch.zeros(2), proprio_index=fields, latent_index=latent, latent_weight=-1.0)
    fields_only = GoalObjective(torch.zeros(2), proprio_index=fields, latent_index=latent, latent_weight=0.0)
    assert fields_only(model, states, None).item() == pytest.approx(-3 / 2)  # weight 0: the fields term alone
    two_goals = GoalObjective(torch.zeros(2, 2), proprio_index=fields, latent_index=latent)
    with pytest.raises(ValueError, match="5 trajectories cannot be split among 2 goals"):
        two_goals(model, {"x": torch.zeros(5, 2, 2)}, None)


@pytest.mark.parametrize("kind", KINDS)
def test_drift_correction_removes_the_offset_of_a_biased_model(kind):
    """Offset-free MPC: a model that predicts a drift the system lacks stops the loop short of the goal;
    the one-step errors measured online, added back to the imagined path, bring it to the goal."""
    model = PointMass(dim=1, bias=0.05, decodes=True)  # the system is x' = x + 0.1·a, without the bias
    goal = torch.tensor([0.5])

    def final_error(correct: bool) -> float:
        torch.manual_seed(0)
        estimate = DriftEstimate(goal.shape, weight=0.5)
        objective = GoalObjective(goal, proprio_index=torch.tensor([0]), drift=estimate.drift if correct else None)
        planner = make(kind, action_dim=1, horizon=8, objective=objective)
        x = torch.zeros(1, 1)
        for _ in range(40):
            action = planner.plan(model, {"x": x})
            predicted = model.imagine({"x": x}, 1, actions=action[:, None])[0]["x"][:, 0]
            x = x + model.dt * action
            estimate.update(x[0], predicted[0])
        return abs(x.item() - goal.item())

    assert final_error(correct=False) > 0.04  # 0.06 (CEM), 0.057 (MPPI)
    assert final_error(correct=True) < 0.01  # 0.0006, 0.002


def test_drift_on_another_device_is_refused_not_copied():
    """A copy on the planning device would never see DriftEstimate's in-place updates."""
    objective = GoalObjective(torch.zeros(1), drift=torch.zeros(1, device="meta"))
    with pytest.raises(ValueError, match="drift is on meta but the planner runs on cpu"):
        make("mppi", action_dim=1, objective=objective).plan(PointMass(dim=1), {"x": torch.zeros(1, 1)})


def test_drift_estimate_averages_one_step_errors_and_checks_its_input():
    estimate = DriftEstimate((2,), weight=0.5)
    estimate.update(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))  # error (1, 0)
    torch.testing.assert_close(estimate.drift, torch.tensor([0.5, 0.0]))
    estimate.update(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))  # error (1, 2)
    torch.testing.assert_close(estimate.drift, torch.tensor([0.75, 1.0]))
    last = DriftEstimate((2,), weight=1.0)
    last.update(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 3.0]))
    torch.testing.assert_close(last.drift, torch.tensor([-2.0, -1.0]))  # weight 1: the last error alone
    estimate.reset()
    assert not estimate.drift.any()
    with pytest.raises(ValueError, match=r"weight must be in \(0, 1\]"):
        DriftEstimate((2,), weight=0.0)
    with pytest.raises(ValueError, match=r"observed and predicted must be \(2,\)"):
        estimate.update(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"observed and predicted must be \(2,\), got \(2,\) and \(1,\)"):
        estimate.update(torch.zeros(2), torch.zeros(1))  # would broadcast


def test_goal_objective_adds_h_times_the_drift_at_imagined_step_h():
    model = PointMass(dim=1, decodes=True)
    states = {"x": torch.tensor([[[0.0], [0.0], [0.0]]])}  # (N=1, H=3, F=1), all at 0
    drift = torch.tensor([1.0])
    objective = GoalObjective(torch.tensor([2.0]), proprio_index=torch.tensor([0]), drift=drift)
    assert objective(model, states, None).item() == pytest.approx(-(1 + 0 + 1) / 3)  # corrected path 1, 2, 3
    drift.fill_(0.0)  # updated in place: the objective reads it at every call
    assert objective(model, states, None).item() == pytest.approx(-2.0)
    drift.fill_(1.0)
    terminal = GoalObjective(torch.tensor([2.0]), proprio_index=torch.tensor([0]), drift=drift, terminal_only=True)
    assert terminal(model, states, None).item() == pytest.approx(-1.0)  # the last step is h = 3
    per_env = GoalObjective(torch.tensor([[2.0], [0.0]]), proprio_index=torch.tensor([0]),
                            drift=torch.tensor([[1.0], [0.0]]))
    two = {"x": torch.zeros(2, 3, 1)}
    torch.testing.assert_close(per_env(model, two, None), torch.tensor([-2 / 3, 0.0]))
    latent = GoalObjective(torch.tensor([2.0]), drift=drift)  # on the latent features too
    assert latent(model, states, None).item() == pytest.approx(-(1 + 0 + 1) / 3)
    with pytest.raises(ValueError, match=r"drift must have the goal's shape \(1,\), got \(2,\)"):
        GoalObjective(torch.tensor([2.0]), proprio_index=torch.tensor([0]), drift=torch.zeros(2))
