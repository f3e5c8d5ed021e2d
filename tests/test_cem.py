"""CEM's refit and settings, and the warm start's shift, against numbers worked out from the recorded candidates
(behaviors/cem.py, behaviors/planning.py); tests/test_planners.py has both planners on known optima."""

from __future__ import annotations

import pytest
import torch

from tests.point_mass import PointMass
from wm_robotics.behaviors.cem import CEMPlanner
from wm_robotics.behaviors.planning import shift_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: 1 torch thread, restored after


def test_shift_plan_drops_the_executed_first_step_and_appends_the_fill():
    mean = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[..., None]  # (E=2, H=3, A=1)
    expected = torch.tensor([[2.0, 3.0, 9.0], [5.0, 6.0, 9.0]])[..., None]
    assert torch.equal(shift_plan(mean, torch.tensor([9.0])), expected)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_cem_refit_is_the_elite_mean_and_population_std_blended_with_the_old_by_momentum(momentum):
    torch.manual_seed(0)
    record = []

    def objective(model, states, actions):
        scores = -(actions - 2.0).square().sum((1, 2))
        record.append((actions.clone(), scores.clone()))
        return scores

    planner = CEMPlanner(1, horizon=2, iterations=1, candidates=16, elites=4, init_std=0.5, min_std=0.0,
                         action_low=-1.0, action_high=3.0, momentum=momentum, objective=objective)
    model = PointMass()
    action = planner.plan(model, model.start(0.0))
    actions, scores = record[0]
    order = scores.argsort(descending=True)[:4]
    elites = actions[order]  # (K=4, H=2, A=1)
    elite_mean = elites.mean(0)
    elite_std = (elites - elite_mean).square().mean(0).sqrt()  # population std: divided by K, not K - 1
    cold_mean, init_std = 1.0, 0.5 * 2.0  # the middle of [-1, 3]; init_std times the half-range 2
    info = planner.last_info
    torch.testing.assert_close(info["plan"][0], (1 - momentum) * elite_mean + momentum * cold_mean)
    torch.testing.assert_close(info["std"][0], (1 - momentum) * elite_std + momentum * init_std)
    torch.testing.assert_close(action[0], info["plan"][0, 0])
    assert info["best_score"].item() == scores.max().item()
    assert info["elite_score"].item() == pytest.approx(scores[order].sum().item() / 4)


def test_cem_std_never_falls_below_min_std_times_each_dims_half_range():
    model = PointMass(dim=2)
    planner = CEMPlanner(2, horizon=2, iterations=1, candidates=8, elites=1, min_std=0.1,
                         action_low=[-1.0, 0.0], action_high=[3.0, 0.5])  # half-ranges 2 and 0.25
    planner.plan(model, model.start([0.0, 0.0]))  # one elite: its std is 0, the floor decides
    torch.testing.assert_close(planner.last_info["std"], torch.tensor([0.2, 0.025]).expand(1, 2, 2))


def test_cem_settings_are_checked():
    with pytest.raises(ValueError, match="need 0 <= min_std <= init_std, got min_std=0.5, init_std=0.2"):
        CEMPlanner(1, min_std=0.5, init_std=0.2)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        CEMPlanner(1, momentum=1.0)
    with pytest.raises(ValueError, match="action_dim, horizon and iterations must be positive, got 0, 12, 10"):
        CEMPlanner(0)
    assert CEMPlanner(1, candidates=10, elites=10).elites == 10  # every candidate an elite is allowed

