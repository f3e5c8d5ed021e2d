"""World Models' controller C: CMA-ES in the dream, batched over the population, resumable."""

import io
import math

import pytest
import torch
from torch import nn

from wm_robotics.behaviors import cmaes_controller
from wm_robotics.behaviors.cmaes_controller import CMAESController, dream_returns
from wm_robotics.benchmarks import dream as dream_benchmark
from wm_robotics.models.base import WorldModel
from wm_robotics.models.vmc import VMCWorldModel

TARGET_WEIGHT, TARGET_BIAS = torch.tensor([0.8, -0.5]), 0.3


class ContextBandit(WorldModel):
    """A dream with a known optimal linear controller: every step draws a fresh context x ~ N(0, I)
    and pays −(a − tanh(w*·x + b*))² for the action a taken on x; features are [x, last reward]."""

    obs_keys, action_dim, feature_dim = ("proprio",), 1, 3

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))  # so that the model has a device

    def features(self, state):
        return torch.cat([state["x"], state["r"].unsqueeze(-1)], -1)

    def imagine(self, state, horizon, actions=None, policy=None):
        states, used = [], []
        for _ in range(horizon):
            action = policy(self.features(state))
            best = torch.tanh(state["x"] @ TARGET_WEIGHT + TARGET_BIAS)
            state = {"x": torch.randn_like(state["x"]), "r": -(action[:, 0] - best).square()}
            states.append(state)
            used.append(action)
        return {k: torch.stack([s[k] for s in states], 1) for k in states[0]}, torch.stack(used, 1)

    def predict_reward(self, features):
        return features[..., -1]


def test_cmaes_in_a_dream_reaches_the_known_optimal_linear_controller(one_torch_thread):
    torch.manual_seed(0)
    controller = CMAESController(3, 1, population=16, rollouts=32, horizon=4, sigma=0.5, seed=0)
    start = {"x": torch.randn(64, 2), "r": torch.zeros(64)}
    metrics = controller.evolve(ContextBandit(), start, generations=80)
    # the reward feature is ~0 near the optimum, so its weight is free: compare the map from contexts
    torch.testing.assert_close(controller.weight[0, :2], TARGET_WEIGHT, atol=0.06, rtol=0)
    torch.testing.assert_close(controller.bias, torch.tensor([TARGET_BIAS]), atol=0.06, rtol=0)
    contexts = torch.randn(100, 2)
    actions = controller.policy(torch.cat([contexts, torch.zeros(100, 1)], -1), sample=False)[:, 0]
    torch.testing.assert_close(actions, torch.tanh(contexts @ TARGET_WEIGHT + TARGET_BIAS), atol=0.05, rtol=0)
    assert metrics["cmaes/generation"] == 80 and metrics["dream/return_center"] > -0.05


def _deterministic_vmc() -> VMCWorldModel:
    torch.manual_seed(0)
    return VMCWorldModel({"proprio": (5,)}, 2, z_dim=4, hidden=8, mixtures=3, units=16, temperature=0.0)


def _start(model: VMCWorldModel, count: int) -> dict[str, torch.Tensor]:
    return {key: torch.randn(count, value.shape[-1]) for key, value in model.initial(1).items()}


def test_population_batched_equals_one_candidate_at_a_time(one_torch_thread):
    model = _deterministic_vmc()
    model.reward_head[-1].weight.data.normal_()  # a non-zero reward head
    start = _start(model, 3)
    weight, bias = torch.randn(5, 2, model.feature_dim), torch.randn(5, 2)
    together = dream_returns(model, start, weight, bias, horizon=6)
    alone = torch.cat([dream_returns(model, start, weight[p:p + 1], bias[p:p + 1], horizon=6) for p in range(5)])
    assert together.shape == (5, 3) and together.abs().sum() > 0
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("diagonal, population, saved_after", [(False, 6, 3), (True, 6, 3), (False, 6, 0), (True, 6, 0),
                                                                (False, 4, 3)])  # 4: cma's mirrored samples
def test_checkpoint_loads_weights_only_and_resumes_evolution_exactly(one_torch_thread, diagonal, population,
                                                                     saved_after):
    model = _deterministic_vmc()
    model.reward_head[-1].weight.data.normal_()
    start = _start(model, 16)
    kwargs = dict(population=population, rollouts=4, horizon=5, diagonal=diagonal)
    first = CMAESController(model.feature_dim, 2, **kwargs, seed=1)
    if saved_after:
        first.evolve(model, start, generations=saved_after)
    buffer = io.BytesIO()
    torch.save(first.full_state_dict(), buffer)
    buffer.seek(0)
    second = CMAESController(model.feature_dim, 2, **kwargs, seed=99)
    second.load_full_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(second.weight, first.weight)
    for controller in (first, second):
        controller.evolve(model, start, generations=2)
    torch.testing.assert_close(second.weight, first.weight, atol=0, rtol=0)
    assert second.es.sigma == pytest.approx(first.es.sigma, rel=1e-12, abs=0)  # mirrored samples: an ulp apart
    assert second.es.countiter == first.es.countiter == saved_after + 2


@pytest.mark.parametrize("saved_diagonal", [False, True])
def test_a_state_of_the_other_covariance_kind_is_refused_by_name(one_torch_thread, saved_diagonal):
    model = _deterministic_vmc()
    saved = CMAESController(model.feature_dim, 2, population=4, rollouts=2, horizon=2, diagonal=saved_diagonal, seed=1)
    saved.evolve(model, _start(model, 4), generations=1)
    other = CMAESController(model.feature_dim, 2, population=4, rollouts=2, horizon=2, diagonal=not saved_diagonal)
    kinds = ["full-covariance", "diagonal"]
    with pytest.raises(ValueError, match=f"the saved CMA-ES is {kinds[saved_diagonal]}, this one "
                                         f"{kinds[not saved_diagonal]}: behavior.diagonal cannot change"):
        other.load_full_state_dict(saved.full_state_dict())


def test_update_warms_up_then_evolves_every_nth_call(one_torch_thread):
    model = _deterministic_vmc()
    controller = CMAESController(model.feature_dim, 2, population=4, rollouts=2, horizon=2, warmup=2, every=3)
    start = _start(model, 8)
    generations = [controller.update(model, start)["cmaes/generation"] for _ in range(7)]
    assert generations == [0, 0, 1, 1, 1, 2, 2]
    resumed = CMAESController(model.feature_dim, 2, population=4, rollouts=2, horizon=2, warmup=2, every=3)
    generations = [resumed.update(model, start)["cmaes/generation"] for _ in range(4)]
    state = resumed.full_state_dict()
    resumed = CMAESController(model.feature_dim, 2, population=4, rollouts=2, horizon=2, warmup=2, every=3)
    resumed.load_full_state_dict(state)  # mid-schedule: neither the warm-up nor the last generation's metrics redone
    generations += [resumed.update(model, start)["cmaes/generation"] for _ in range(3)]
    assert generations == [0, 0, 1, 1, 1, 2, 2]


def test_policy_bounds_and_bad_input():
    controller = CMAESController(4, 1, action_low=-2.0, action_high=2.0, action_noise=0.5, seed=0)
    controller.bias.fill_(10.0)
    action = controller.policy(torch.zeros(3, 4))
    assert action.shape == (3, 1) and (action <= 1.0).all()
    assert float(controller.to_env(controller.policy(torch.zeros(1, 4), sample=False))) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="population must be at least 2"):
        CMAESController(4, 1, population=1)
    with pytest.raises(ValueError, match="rollouts must be a positive integer"):
        CMAESController(4, 1, rollouts=0)
    other = CMAESController(5, 1, seed=0)
    with pytest.raises(ValueError, match="evolves 6 parameters, this controller 5"):
        controller.load_full_state_dict(other.full_state_dict())
    assert float(controller.bias) == 10.0  # nothing of the other controller loaded


def test_dream_benchmark_times_both_modes(one_torch_thread):
    rows = dream_benchmark.measure(torch.device("cpu"), population=3, rollouts=2, horizon=3, rounds=1)
    assert [row["mode"] for row in rows] == ["batched", "one candidate at a time"]
    batched, one_at_a_time = rows
    assert batched["rollouts_per_s"] == pytest.approx(3 * 2 / batched["seconds_per_generation"])
    assert batched["dream_steps_per_s"] == pytest.approx(3 * batched["rollouts_per_s"])
    assert batched["speedup_vs_one_at_a_time"] == pytest.approx(
        one_at_a_time["seconds_per_generation"] / batched["seconds_per_generation"])


class ActionPays(WorldModel):
    """State x is constant; the reward for arriving after action a is a itself; no continue head."""

    obs_keys, action_dim, feature_dim = ("proprio",), 1, 1

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def features(self, state):
        return state["x"]

    def imagine(self, state, horizon, actions=None, policy=None):
        xs, used = [], []
        x = state["x"]
        for _ in range(horizon):
            a = policy(x)
            xs.append(torch.cat([x[:, :0], a], -1) * 0 + x)  # same x
            used.append(a)
        acts = torch.stack(used, 1)
        self.last_actions = acts
        return {"x": torch.stack(xs, 1), "a": acts}, acts

    def predict_reward(self, features):
        return self.last_actions[..., 0]


def test_dream_metrics_score_the_candidates_apart_from_the_centre(monkeypatch):
    ctrl = CMAESController(1, 1, population=6, rollouts=2, horizon=2, discount=0.9, seed=0)
    dreamed = []
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0])[:, None].repeat(1, 2)  # six candidates, the centre

    def dream(model, start, weight, bias, horizon, discount):
        dreamed.append((weight.shape[0], horizon, discount))
        return returns

    monkeypatch.setattr(cmaes_controller, "dream_returns", dream)
    metrics = ctrl.evolve(ActionPays(), {"x": torch.ones(4, 1)}, generations=1)
    assert dreamed == [(7, 2, 0.9)]
    assert (metrics["dream/return_best"], metrics["dream/return_mean"], metrics["dream/return_center"]) == (6, 3.5, 10)


def test_evolve_from_a_single_start_state():
    ctrl = CMAESController(1, 1, population=4, rollouts=3, horizon=2, seed=0)
    assert ctrl.evolve(ActionPays(), {"x": torch.ones(1, 1)}, generations=2)["cmaes/generation"] == 2


def test_dream_returns_discounted_with_weight_then_bias():
    model = ActionPays()
    start = {"x": torch.full((2, 1), 2.0)}
    ctrl = CMAESController(1, 1, population=2, rollouts=2, horizon=3, discount=0.5, seed=0)
    weight, bias = ctrl.unflatten(torch.tensor([[0.5, 0.2], [0.0, -0.3]]))
    returns = dream_returns(model, start, weight, bias, 3, 0.5)
    geometric = 1 + 0.5 + 0.25
    expected = torch.tensor([[math.tanh(0.5 * 2 + 0.2)] * 2, [math.tanh(-0.3)] * 2]) * geometric
    torch.testing.assert_close(returns, expected)


def test_evolve_reports_the_centre_and_climbs_the_reward():
    model = ActionPays()
    start = {"x": torch.ones(4, 1)}
    ctrl = CMAESController(1, 1, population=6, rollouts=2, horizon=2, sigma=0.3, discount=0.9, seed=0)
    metrics = ctrl.evolve(model, start, generations=1)
    assert metrics["dream/return_center"] == 0.0  # the first mean is all zeros: action tanh(0) = 0
    assert metrics["dream/return_best"] > 0
    ctrl.evolve(model, start, generations=15)
    assert float(ctrl.policy(torch.ones(1, 1), sample=False)) > 0.5  # reward = action: evolves toward +1


class StartRecorder(WorldModel):
    """Remembers the start states of each dream; every step pays 0."""

    obs_keys, action_dim, feature_dim = ("proprio",), 1, 1

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.starts = []

    def features(self, state):
        return state["x"]

    def imagine(self, state, horizon, actions=None, policy=None):
        self.starts.append(state)
        used = torch.stack([policy(state["x"])] * horizon, 1)
        return {"x": torch.stack([state["x"]] * horizon, 1)}, used

    def predict_reward(self, features):
        return features[..., 0] * 0


def test_without_every_the_first_call_after_warmup_evolves():
    ctrl = CMAESController(1, 1, population=4, rollouts=2, horizon=2, warmup=2, every=1, seed=0)
    start = {"x": torch.ones(4, 1)}
    assert [ctrl.update(StartRecorder(), start)["cmaes/generation"] for _ in range(4)] == [0, 0, 1, 2]


def test_zero_sigma_is_rejected():
    with pytest.raises(ValueError, match="need sigma > 0"):
        CMAESController(4, 1, sigma=0.0)


def test_starts_are_whole_states_drawn_from_every_sequence():
    model = StartRecorder()
    index = torch.arange(100.0).reshape(10, 10, 1)  # 10 sequences of 10 states
    ctrl = CMAESController(1, 1, population=2, rollouts=64, horizon=1, seed=0)
    ctrl.evolve(model, {"x": index, "y": -index}, generations=1)
    start = model.starts[0]
    assert start["x"].shape == (3 * 64, 1)
    torch.testing.assert_close(start["y"], -start["x"])
    torch.testing.assert_close(start["x"], start["x"][:64].repeat(3, 1))  # the same starts for every candidate
    picked = start["x"][:64, 0]
    assert bool((picked == picked.round()).all()) and 0 <= float(picked.min()) and float(picked.max()) < 100
    assert len(set((picked // 10).tolist())) > 5 and float(picked.max()) >= 64
