"""CEM and MPPI planners on analytic toy world models (known optima) and a smoke run on the xs RSSM."""

from __future__ import annotations

import pytest
import torch

from wm_robotics.behaviors.cem import CEMPlanner
from wm_robotics.behaviors.drift_estimate import DriftEstimate
from wm_robotics.behaviors.mppi import MPPIPlanner
from wm_robotics.behaviors.planning import GoalObjective, RewardObjective, goal_embedding, score_population
from wm_robotics.models.base import State, WorldModel
from wm_robotics.models.rssm import RSSMWorldModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: 1 torch thread, restored after


class PointMass(WorldModel):
    """x' = decay·x + dt·a (+ bias: a model error); features = x; reward = −|x − target|²; optional constant
    continue."""

    def __init__(self, target=0.5, dt: float = 0.1, decay: float = 1.0, dim: int = 1, cont: float | None = None,
                 device: str = "cpu", decodes: bool = False, matmul: bool = False, bias: float = 0.0):
        super().__init__()
        self.obs_keys, self.action_dim, self.feature_dim = ("proprio",), dim, dim
        self.target = torch.as_tensor(target, dtype=torch.float32, device=device)
        self.device, self.decodes = device, decodes
        self.dt, self.decay, self.cont, self.bias = dt, decay, cont, bias
        self.imagine_calls = 0
        self.matmul, self.dtypes = matmul, set()  # matmul: the step as a Linear, so autocast reaches it

    def start(self, *positions) -> State:
        x = torch.tensor(positions, dtype=torch.float32, device=self.device)
        return {"x": x.reshape(len(positions), self.action_dim)}

    def imagine(self, state, horizon, actions=None, policy=None):
        self.imagine_calls += 1
        x, xs, used = state["x"], [], []
        for t in range(horizon):
            a = actions[:, t] if actions is not None else policy(x)
            if self.matmul:
                weight = torch.cat([self.decay * torch.eye(self.action_dim), self.dt * torch.eye(self.action_dim)], 1)
                x = torch.nn.functional.linear(torch.cat([x, a], -1), weight.to(x.device))
            else:
                x = self.decay * x + self.dt * a + self.bias
            self.dtypes.add(x.dtype)
            xs.append(x)
            used.append(a)
        return {"x": torch.stack(xs, 1)}, torch.stack(used, 1)

    def features(self, state):
        return state["x"]

    def predict_reward(self, features):
        return -(features - self.target).square().sum(-1)

    def predict_continue(self, features):
        return None if self.cont is None else torch.full(features.shape[:-1], self.cont, device=features.device)

    def decode(self, state, keys=None):
        """A "probe decoder" for goal energies on proprio fields: proprio = (x, −x)."""
        return {"proprio": torch.cat([state["x"], -state["x"]], -1)} if self.decodes else {}


def make(kind: str, **kw):
    """A planner of either kind with small test-sized populations unless overridden."""
    if kind == "cem":
        kw = {"horizon": 3, "iterations": 6, "candidates": 300, "elites": 30, **kw}
        return CEMPlanner(**kw)
    kw = {"horizon": 3, "iterations": 6, "samples": 300, "elites": 30, "sample_final": False, **kw}
    return MPPIPlanner(**kw)


KINDS = ["cem", "mppi"]


@pytest.mark.parametrize("kind", KINDS)
def test_first_action_at_bound_when_target_out_of_reach(kind):
    torch.manual_seed(0)
    model = PointMass(target=0.5)  # 3 steps of 0.1·a reach at most 0.3: push with a = +1 throughout
    action = make(kind, action_dim=1).plan(model, model.start(0.0))
    assert action.shape == (1, 1)
    assert action.item() > 0.95


@pytest.mark.parametrize("kind, kw", [("cem", {}), ("mppi", {}), ("mppi", {"sample_final": True})])
def test_interior_optimum(kind, kw):
    torch.manual_seed(1)
    model = PointMass(target=0.3, dt=1.0, decay=0.0)  # x' = a: reward −(a − 0.3)² summed over the plan
    planner = make(kind, action_dim=1, **kw)
    action = planner.plan(model, model.start(0.0))
    assert abs(action.item() - 0.3) < 0.05
    assert torch.allclose(planner.last_info["plan"], torch.full((1, 3, 1), 0.3), atol=0.05)
    assert planner.last_info["best_score"].item() > -0.01


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_search_finds_interior_optimum(kind):
    torch.manual_seed(1)
    model = PointMass(target=0.3, dt=1.0, decay=0.0, matmul=True)
    planner = make(kind, action_dim=1, precision="bf16")
    action = planner.plan(model, model.start(0.0))
    assert model.dtypes == {torch.bfloat16}  # the dynamics ran in bfloat16 ...
    assert action.dtype == planner.last_info["plan"].dtype == torch.float32  # ... the planner's numbers did not
    assert abs(action.item() - 0.3) < 0.05
    assert torch.allclose(planner.last_info["plan"], torch.full((1, 3, 1), 0.3), atol=0.05)
    fp32 = make(kind, action_dim=1)
    fp32.plan(model, model.start(0.0))
    assert torch.float32 in model.dtypes


@pytest.mark.parametrize("kind", KINDS)
def test_warm_start_needs_fewer_iterations(kind):
    model = PointMass(target=0.8, dt=1.0, decay=0.0)  # optimum 0.8 at every step, far from the cold mean 0
    narrow = {"init_std": 0.3} if kind == "cem" else {"max_std": 0.3}
    planner = make(kind, action_dim=1, iterations=1, **narrow)
    state = model.start(0.0)
    cold, warm = [], []
    for seed in range(4):
        torch.manual_seed(seed)
        planner.reset()
        cold.append(abs(planner.plan(model, state).item() - 0.8))  # one iteration from scratch
        planner.iterations = 6
        planner.plan(model, state)  # converge once (the previous control step)
        planner.iterations = 1
        warm.append(abs(planner.plan(model, state).item() - 0.8))  # one iteration from the shifted plan
    assert max(warm) < 0.15 < 0.3 < min(cold)  # 200 seeds: cold ≥ 0.37, warm mean 0.03, max 0.10
    # reset() restores the cold start exactly; reset([1]) forgets env 1's plan only
    torch.manual_seed(0)
    planner.reset()
    assert planner.plan(model, state).item() == pytest.approx(0.8 - cold[0])
    planner.iterations = 6
    planner.plan(model, model.start(0.0, 0.0))
    planner.iterations = 1
    planner.reset([1])
    error = (planner.plan(model, model.start(0.0, 0.0)) - 0.8).abs().squeeze(1)
    assert error[0] < 0.15 < 0.3 < error[1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target, expected", [(5.0, 0.7), (-5.0, -0.2), (0.03, 0.3)])
def test_asymmetric_bounds(kind, target, expected):
    torch.manual_seed(2)
    model = PointMass(target=target)
    planner = make(kind, action_dim=1, action_low=-0.2, action_high=0.7)
    actions = torch.stack([planner.plan(model, model.start(0.0)) for _ in range(3)])
    assert (actions >= -0.2).all() and (actions <= 0.7).all()
    assert (planner.last_info["plan"] >= -0.2).all() and (planner.last_info["plan"] <= 0.7).all()
    assert abs(actions[0].item() - expected) < 0.06


@pytest.mark.parametrize("kind", KINDS)
def test_per_dimension_bounds(kind):
    torch.manual_seed(3)
    model = PointMass(target=[5.0, 5.0], dim=2)
    planner = make(kind, action_dim=2, action_low=[-0.2, -1.0], action_high=[0.7, 0.1])
    action = planner.plan(model, model.start([0.0, 0.0], [1.0, 1.0]))
    assert action.shape == (2, 2)
    assert (action >= torch.tensor([-0.2, -1.0])).all() and (action <= torch.tensor([0.7, 0.1])).all()
    assert torch.allclose(action, torch.tensor([0.7, 0.1]), atol=0.05)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_envs_match_single_env(kind):
    model = PointMass(target=0.5)  # from x0 the optimum is a = (0.5 − x0) / 0.1, then 0
    starts = [0.45, 0.5, 0.55]
    torch.manual_seed(4)
    batched = make(kind, action_dim=1).plan(model, model.start(*starts)).squeeze(1)
    single = []
    for x0 in starts:
        torch.manual_seed(5)
        single.append(make(kind, action_dim=1).plan(model, model.start(x0)).item())
    assert torch.allclose(batched, torch.tensor(single), atol=0.05)
    assert torch.allclose(batched, torch.tensor([0.5, 0.0, -0.5]), atol=0.08)


def test_imagine_called_once_per_iteration():
    model = PointMass()
    make("cem", action_dim=1, iterations=4).plan(model, model.start(0.0, 0.2))
    assert model.imagine_calls == 4
    model.imagine_calls = 0
    prior = MPPIPlanner(1, iterations=4, samples=50, elites=10, policy=lambda f: torch.ones_like(f))
    prior.plan(model, model.start(0.0, 0.2))
    assert model.imagine_calls == 1 + 4  # one policy-prior rollout per plan call


def test_policy_prior_is_imagined_once_per_plan_and_scored_with_its_clamped_actions():
    model, imagined, scored = PointMass(), [], []
    imagine = model.imagine
    model.imagine = lambda state, horizon, **kw: imagined.append(state["x"].shape[0]) or imagine(state, horizon, **kw)

    def objective(model, states, actions):
        scored.append((states["x"], actions))
        return RewardObjective()(model, states, actions)

    planner = MPPIPlanner(1, iterations=4, samples=50, elites=10, policy_samples=8, action_low=-0.5, action_high=0.5,
                          policy=lambda f: torch.ones_like(f), objective=objective)
    start = model.start(0.0, 0.2)
    planner.plan(model, start)
    assert imagined == [2 * 8] + [2 * 50] * 4  # the prior's rows once, then only the Gaussian samples
    for states, actions in scored:
        per_env = actions.unflatten(0, (2, 58))
        assert (per_env[:, :8] == 0.5).all() and (per_env[:, 8:] < 0.5).any()  # the prior first, clamped
        expected = start["x"].repeat_interleave(58, 0)[:, None] + model.dt * actions.cumsum(1)
        torch.testing.assert_close(states, expected)  # every row's states are its own actions' states


def test_mppi_refits_on_the_prior_it_scored():
    """Each environment's prior (+1 below the target, -1 above) beats every narrow Gaussian sample around 0,
    so the one elite, and the plan, must be that environment's own prior sequence."""
    model = PointMass(target=0.5)
    planner = MPPIPlanner(1, iterations=1, samples=16, elites=1, policy_samples=4, max_std=0.05, sample_final=False,
                          policy=lambda f: torch.sign(model.target - f))
    planner.plan(model, model.start(0.0, 1.0))
    torch.testing.assert_close(planner.last_info["plan"], torch.tensor([1.0, -1.0])[:, None, None].expand(2, 3, 1))


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


def test_reward_objective_discount_continue_and_value():
    model = PointMass(target=0.0, cont=0.5)
    states = {"x": torch.tensor([[[1.0], [2.0], [3.0]]])}  # rewards −1, −4, −9
    actions = torch.zeros(1, 3, 1)
    g = 0.9 * 0.5  # discount × continue per step
    assert RewardObjective(0.9)(model, states, actions).item() == pytest.approx(-1 - 4 * g - 9 * g**2)
    value = RewardObjective(0.9, value_fn=lambda f: 10 * f)(model, states, actions).item()
    assert value == pytest.approx(-1 - 4 * g - 9 * g**2 + g**3 * 30)
    model.cont = None
    assert RewardObjective(0.9)(model, states, actions).item() == pytest.approx(-1 - 4 * 0.9 - 9 * 0.81)


def test_score_population_layout():
    model = PointMass(target=0.0)
    actions = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).expand(2, 3, 1, 1)  # (E=2, P=3, H=1, A=1)
    scores = score_population(model, model.start(0.0, 1.0), actions, RewardObjective())
    expected = -torch.tensor([[0.1, 0.2, 0.3], [1.1, 1.2, 1.3]]) ** 2
    assert torch.allclose(scores, expected)


def test_planners_on_rssm():
    torch.manual_seed(7)
    rssm = RSSMWorldModel.from_size("xs", {"proprio": (5,)}, 1)
    state = rssm.initial(2)
    state = rssm.step(state, torch.zeros(2, 1), {"proprio": torch.randn(2, 5)}, torch.ones(2, dtype=torch.bool))
    w = torch.randn(rssm.feature_dim, 1) * 0.1
    planners = [
        CEMPlanner(1, horizon=5, iterations=2, candidates=64, elites=8, action_low=-0.5, action_high=0.8),
        MPPIPlanner(1, iterations=2, samples=64, elites=8, action_low=-0.5, action_high=0.8),
        MPPIPlanner(1, iterations=2, samples=64, elites=8, policy=lambda f: torch.tanh(f @ w),
                    objective=RewardObjective(value_fn=lambda f: f.sum(-1))),
    ]
    for planner in planners:
        for _ in range(2):  # second call is warm-started
            action = planner.plan(rssm, state)
            assert action.shape == (2, 1) and torch.isfinite(action).all()
            assert (action >= planner.low).all() and (action <= planner.high).all()
        assert torch.isfinite(planner.last_info["best_score"]).all()
    goal = GoalObjective(rssm.features(state))  # (E=2, F) goals
    planner = CEMPlanner(1, horizon=3, iterations=1, candidates=16, elites=4, objective=goal)
    assert planner.plan(rssm, state).shape == (2, 1)


def test_value_errors():
    with pytest.raises(ValueError, match="elites"):
        CEMPlanner(1, candidates=10, elites=11)
    with pytest.raises(ValueError, match="elites"):
        MPPIPlanner(1, samples=10, elites=11)
    with pytest.raises(ValueError, match="positive"):
        CEMPlanner(1, horizon=0)
    with pytest.raises(ValueError, match="positive"):
        MPPIPlanner(1, iterations=0)
    with pytest.raises(ValueError, match="below"):
        CEMPlanner(1, action_low=0.5, action_high=0.5)
    with pytest.raises(ValueError, match=r"action_high must be a scalar or hold action_dim=2 values, got shape \(3,\)"):
        MPPIPlanner(2, action_high=[1.0, 1.0, 1.0])
    assert CEMPlanner(2, action_low=[-1.0, 0.0], action_high=1.0).low.tolist() == [-1.0, 0.0]
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; valid precisions: \['bf16', 'bf16_full', 'fp32'\]"):
        MPPIPlanner(1, precision="fp16")
    with pytest.raises(ValueError, match="norm"):
        GoalObjective(torch.zeros(2), norm="cos")
    model = PointMass(dim=2)
    planner = CEMPlanner(2, horizon=2, iterations=1, candidates=8, elites=2, objective=GoalObjective(torch.zeros(3, 2)))
    with pytest.raises(ValueError, match="3 goals but the state batch has 2"):
        planner.plan(model, model.start([0.0, 0.0], [1.0, 1.0]))
    model.predict_reward = lambda features: None
    with pytest.raises(ValueError, match="no reward head"):
        CEMPlanner(2, horizon=2, iterations=1, candidates=8, elites=2).plan(model, model.start([0.0, 0.0]))
