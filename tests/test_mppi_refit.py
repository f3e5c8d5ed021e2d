"""MPPI's refit in exact numbers: a fixed population, the prior penalty, the std around the new mean and its clamps."""

from __future__ import annotations

import pytest
import torch

from tests.point_mass import PointMass
from wm_robotics.behaviors.mppi import MPPIPlanner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flat(model, states, actions):
    return torch.zeros(actions.shape[0])


@pytest.mark.parametrize("prior_coef, max_std, plan, std, elite_score", [
    (1.0, 2.0, 0.379087, 0.289388, -0.397643),
    (1.0, 0.1, 0.379087, 0.1, -0.397643),  # std above max_std: clamped down
    (10.0, 2.0, 0.597302, 0.05, -0.048560),  # std 0.0401 below min_std: clamped up
])
def test_mppi_refit_with_one_prior_row_and_one_fixed_sample_matches_the_hand_computed_numbers(
        prior_coef, max_std, plan, std, elite_score):
    # prior: 0.6 at each of 3 steps, penalty 0; the sample: 0 throughout, penalty c · 3 · 0.36 = 1.08 c.
    # weights softmax(0.5 · [0, -1.08 c]) = (w0, w1); plan 0.6 w0; std 0.6 √(w0 w1) around the new plan
    planner = MPPIPlanner(1, horizon=3, iterations=1, samples=1, elites=2, policy_samples=1, temperature=0.5,
                          max_std=max_std, sample_final=False, prior_coef=prior_coef, objective=flat,
                          policy=lambda f: torch.full_like(f, 0.6))
    planner._sample = lambda mean, std, count, low, high: torch.zeros(mean.shape[0], count, *mean.shape[1:])
    model = PointMass()
    action = planner.plan(model, model.start(0.0))
    info = planner.last_info
    torch.testing.assert_close(action, torch.full((1, 1), plan), atol=1e-5, rtol=0)
    torch.testing.assert_close(info["plan"], torch.full((1, 3, 1), plan), atol=1e-5, rtol=0)
    torch.testing.assert_close(info["std"], torch.full((1, 3, 1), std), atol=1e-5, rtol=0)
    assert info["best_score"].item() == 0.0
    assert info["elite_score"].item() == pytest.approx(elite_score, abs=1e-5)


def test_mppi_elites_may_count_the_policy_samples():
    prior = MPPIPlanner(1, samples=2, elites=4, policy_samples=2, policy=lambda f: torch.zeros_like(f))
    model = PointMass()
    assert prior.plan(model, model.start(0.0)).shape == (1, 1)
    with pytest.raises(ValueError, match=r"need 0 < elites <= population \(4 = samples \+ policy_samples\), "
                                         r"got elites=5"):
        MPPIPlanner(1, samples=2, elites=5, policy_samples=2, policy=lambda f: torch.zeros_like(f))
    with pytest.raises(ValueError, match=r"need 0 < elites <= population \(2 = samples\), got elites=4"):
        MPPIPlanner(1, samples=2, elites=4, policy_samples=2)  # no policy: its samples do not count


def test_mppi_refuses_a_zero_temperature():  # softmax(0 · scores): every elite weighted alike, the scores ignored
    with pytest.raises(ValueError, match="temperature must be positive, got 0.0"):
        MPPIPlanner(1, temperature=0.0)


def test_sample_final_draws_each_of_three_elites_in_proportion_to_its_weight():
    # per env three fixed plans with first actions 0.1, 0.2, 0.3 (then 0.9); 0.1 scores ln 4.5 below the others,
    # so the weights are (0.1, 0.45, 0.45): drawn by weight, 0.1 is the action in 10% of the envs (argmax: never)
    envs = 4000
    planner = MPPIPlanner(1, horizon=2, iterations=1, samples=3, elites=3, temperature=1.0, sample_final=True,
                          objective=lambda model, states, actions: torch.where(
                              actions[:, 0, 0] < 0.15, -torch.log(torch.tensor(4.5)), torch.tensor(0.0)))
    plans = torch.tensor([[0.1, 0.9], [0.2, 0.9], [0.3, 0.9]]).view(1, 3, 2, 1)
    planner._sample = lambda mean, std, count, low, high: plans.expand(mean.shape[0], 3, 2, 1)
    model = PointMass()
    torch.manual_seed(0)
    actions = planner.plan(model, model.start(*[0.0] * envs)).squeeze(1)
    shares = [(actions == value).float().mean().item() for value in torch.tensor([0.1, 0.2, 0.3])]
    assert 0.085 < shares[0] < 0.115 and all(0.42 < share < 0.48 for share in shares[1:])
