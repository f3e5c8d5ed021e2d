"""World-model metrics (``wm_robotics.wm_metrics``) on a toy linear system: exact, biased and noisy models."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from wm_robotics.envs import make_env
from wm_robotics.models.base import WorldModel
from wm_robotics.rollout import random_policy, run_episode
from wm_robotics.wm_metrics import (
    action_sensitivity,
    goal_reaching,
    latent_diagnostics,
    open_loop_errors,
    replay_branch,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A damped double rotation x' = A x + B a with actions in env units [-2, 2] (so normalisation matters).
ANGLE, DAMPING, LOW, HIGH = 0.2, 0.99, -2.0, 2.0
A = DAMPING * np.kron(np.eye(2), np.array([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]]))
B = np.array([[0.0, 0.0], [0.3, 0.0], [0.0, 0.0], [0.0, 0.3]])


def reward_of(x):
    """Reward for arriving in state x (..., 4)."""
    return -(x ** 2).sum(-1)


class LinearSystemEnv(gym.Env):
    """The toy system as a simulator: proprio = state, reset(seed) draws the start state."""

    observation_space = gym.spaces.Dict({"proprio": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
    action_space = gym.spaces.Box(LOW, HIGH, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.steps = self.np_random.normal(size=4).astype(np.float32), 0
        return {"proprio": self.x.copy()}, {}

    def step(self, action):
        self.x = (A @ self.x + B @ action).astype(np.float32)
        self.steps += 1
        return {"proprio": self.x.copy()}, float(reward_of(self.x)), False, self.steps >= 40, {}


class LinearSystemModel(WorldModel):
    """The toy system behind the WorldModel seam, in normalised actions; exact unless told otherwise."""

    obs_keys = ("proprio",)

    def __init__(self, scale_a=1.0, noise=0.0, ignore_actions=False):
        super().__init__()
        self.register_buffer("a", torch.tensor(A * scale_a, dtype=torch.float32))
        # env action = (HIGH - LOW) / 2 · normalised + (HIGH + LOW) / 2
        self.register_buffer("b", torch.tensor(B * (HIGH - LOW) / 2, dtype=torch.float32))
        self.noise, self.ignore_actions = noise, ignore_actions
        self.action_dim, self.feature_dim = 2, 4

    def initial(self, batch_size):
        return {"x": torch.zeros(batch_size, 4)}

    def observe(self, obs, action, is_first, state=None):
        x = torch.as_tensor(obs["proprio"], dtype=torch.float32)  # (B, T, 4): the state is observed exactly
        return {"x": x}, {"x": x[:, -1]}

    def imagine(self, state, horizon, actions=None, policy=None):
        x, states = state["x"], []
        for t in range(horizon):
            x = x @ self.a.T + (0.0 if self.ignore_actions else actions[:, t] @ self.b.T)
            x = x + self.noise * torch.randn_like(x)
            states.append(x)
        return {"x": torch.stack(states, 1)}, actions

    def features(self, state):
        return state["x"]

    def predict_reward(self, features):
        return reward_of(features)

    def decode(self, state, keys=None):
        return {"proprio": state["x"]}


@pytest.fixture(scope="module")
def toy():
    env = LinearSystemEnv()
    seeds = [3, 4, 5]
    episodes = [run_episode(env, random_policy(env.action_space, seed), seed) for seed in seeds]
    return env, episodes, seeds


def test_exact_model_has_zero_open_loop_error_at_every_horizon(toy):
    _, episodes, _ = toy
    errors = open_loop_errors(LinearSystemModel(), episodes, context=3, horizon=8, action_low=LOW, action_high=HIGH)
    assert errors["horizons"] == list(range(1, 9)) and errors["windows"] == 3 * 3
    for key in ("latent_l2", "proprio_mse", "proprio_nmse", "reward_mse", "reward_mae"):
        assert max(errors[key]) < 1e-5, (key, errors[key])
    assert max(errors["reconstruction"].values()) < 1e-9
    # The same exact model read with the wrong action units is wrong from the first step.
    unnormalised = open_loop_errors(LinearSystemModel(), episodes, context=3, horizon=8)
    assert unnormalised["proprio_mse"][0] > 1e-3
    with pytest.raises(ValueError, match="context must be at least 1, got 0"):  # it would start from the future
        open_loop_errors(LinearSystemModel(), episodes, context=0, horizon=8)
    with pytest.raises(ValueError, match="horizon must be at least 1, got 0"):
        action_sensitivity(LinearSystemModel(), episodes, context=3, horizon=0)


class GradRecordingModel(LinearSystemModel):
    """The exact toy model with a parameter, noting whether autograd was on whenever it decoded."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(()))
        self.grad_enabled = []

    def decode(self, state, keys=None):
        self.grad_enabled.append(torch.is_grad_enabled())
        return {"proprio": state["x"] * self.gain}


def test_the_metrics_build_no_autograd_graph(toy):
    env, episodes, seeds = toy
    model = GradRecordingModel()
    open_loop_errors(model, episodes, context=3, horizon=4, action_low=LOW, action_high=HIGH)
    action_sensitivity(model, episodes, context=3, horizon=4, action_low=LOW, action_high=HIGH, env=env, seeds=seeds)
    assert model.grad_enabled and not any(model.grad_enabled)


@pytest.mark.parametrize("model", [LinearSystemModel(noise=0.05), LinearSystemModel(scale_a=1.03)],
                         ids=["noisy", "wrong_coefficient"])
def test_imperfect_model_error_grows_with_horizon(toy, model):
    _, episodes, _ = toy
    torch.manual_seed(0)
    errors = open_loop_errors(model, episodes, context=3, horizon=10, action_low=LOW, action_high=HIGH)
    for key in ("proprio_nmse", "latent_l2", "reward_mae"):
        curve = np.array(errors[key])
        assert curve[-1] > 2 * curve[0] > 0, (key, curve)
        assert curve[5:].mean() > curve[:5].mean()
    if not model.noise:  # deterministic: strictly growing
        assert np.all(np.diff(errors["proprio_mse"]) > 0)


def test_action_sensitivity_against_the_simulator(toy):
    env, episodes, seeds = toy
    kwargs = dict(context=3, horizon=8, action_low=LOW, action_high=HIGH, env=env, seeds=seeds)
    exact = action_sensitivity(LinearSystemModel(), episodes, **kwargs)
    ignoring = action_sensitivity(LinearSystemModel(ignore_actions=True), episodes, **kwargs)
    assert exact["real_mean"]["proprio"] > 0.01 and exact["real"] == ignoring["real"]
    assert exact["ratio"]["proprio"] == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(exact["model"]["proprio"], exact["real"]["proprio"], rtol=1e-3)
    assert ignoring["model_mean"]["proprio"] < 1e-10 and ignoring["model_mean"]["features"] < 1e-6
    assert ignoring["ratio"]["proprio"] < 1e-8
    with pytest.raises(ValueError, match=r"does not replay from reset\(seed=99\)"):
        replay_branch(env, episodes[0], 99, 5, np.zeros((2, 2), np.float32), ["proprio"])


def test_latent_diagnostics_flag_collapse():
    generator = torch.Generator().manual_seed(0)
    healthy = latent_diagnostics(torch.randn(512, 64, generator=generator))
    assert not healthy["collapsed"] and healthy["effective_rank"] > 40 and healthy["std_min"] > 0.8
    constant = latent_diagnostics(torch.ones(512, 64) * 0.3)
    assert constant["collapsed"] and constant["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert constant["std_mean"] == 0 and constant["dead_fraction"] == 1
    one_direction = torch.randn(512, 1, generator=generator) * torch.randn(1, 64, generator=generator)
    assert latent_diagnostics(one_direction)["collapsed"]


class GoalRecorder:
    """Stands in for an MPCController: records the goal it is given, acts with zeros."""

    goal_keys = ("proprio",)

    def reset(self):
        self.goal, self.steps = None, 0

    def set_goal(self, goal):
        self.goal = goal

    def act(self, obs):
        self.steps += 1
        return np.zeros(2, np.float32)


def test_goal_reaching_only_on_goal_tasks(toy):
    controller, env = GoalRecorder(), make_env("reacher-easy-goal-v1", max_episode_steps=3)
    result = goal_reaching(controller, env, episodes=2, seed=0, progress=False)
    assert 0.0 <= result["success_rate"] <= 1.0 and controller.goal["proprio"].shape == (6,)
    assert len(result["final_distance"]) == 2 and result["final_distance_mean"] >= 0
    short = goal_reaching(controller, make_env("reacher-easy-goal-v1"), episodes=1, seed=0, max_steps=2,
                          progress=False)
    assert short["goal_steps"] == 2 and controller.steps == 2
    assert goal_reaching(controller, toy[0], episodes=2, seed=0, progress=False) is None


BIAS = np.array([0.05, -0.02, 0.03, 0.01])


class BiasedModel(LinearSystemModel):
    """Exact toy model plus a constant BIAS added at every imagined step."""

    def imagine(self, state, horizon, actions=None, policy=None):
        x, states = state["x"], []
        for t in range(horizon):
            x = x @ self.a.T + actions[:, t] @ self.b.T + torch.tensor(BIAS, dtype=torch.float32)
            x = x + self.noise * torch.randn_like(x)
            states.append(x)
        return {"x": torch.stack(states, 1)}, actions


def short_episodes(steps):
    """Two toy episodes of ``steps`` steps (random actions)."""
    env = gym.wrappers.TimeLimit(LinearSystemEnv(), max_episode_steps=steps)
    return [run_episode(env, random_policy(env.action_space, seed), seed) for seed in (1, 2)]


def offsets(horizon):
    """e_h = sum_{j<h} A^j BIAS, the imagined-minus-real state h steps into the future."""
    out, e = [], np.zeros(4)
    for _ in range(horizon):
        e = A @ e + BIAS
        out.append(e.copy())
    return np.stack(out)


def test_open_loop_errors_exact_per_horizon_values():
    context, horizon = 2, 4
    episodes = short_episodes(23)  # 24 observations: windows start at 0, 6, 12, 18
    res = open_loop_errors(BiasedModel(), episodes, context, horizon, LOW, HIGH, per_episode=10)
    assert res["windows"] == 8
    e = offsets(horizon)  # (H, 4)
    np.testing.assert_allclose(res["latent_l2"], np.linalg.norm(e, axis=-1), rtol=1e-4)
    np.testing.assert_allclose(res["proprio_mse"], (e ** 2).mean(-1), rtol=1e-4)
    allobs = np.concatenate([ep["obs/proprio"] for ep in episodes]).astype(np.float64)
    var = allobs.var(0)
    np.testing.assert_allclose(res["proprio_nmse"], (e ** 2 / var).mean(-1), rtol=1e-4)
    # reward: the real future of a window starting at t0 is obs[t0+context : t0+context+H]; the reward on arriving
    # there is episode reward[t0+context-1 ...]
    mae, mse = np.zeros(horizon), np.zeros(horizon)
    for ep in episodes:
        for t0 in (0, 6, 12, 18):
            real = ep["obs/proprio"][t0 + context:t0 + context + horizon].astype(np.float64)
            rew = ep["reward"][t0 + context - 1:t0 + context - 1 + horizon]
            np.testing.assert_allclose(rew, reward_of(real), rtol=1e-5)  # the alignment the test relies on
            err = reward_of(real + e) - rew
            mae += np.abs(err) / 8
            mse += err ** 2 / 8
    np.testing.assert_allclose(res["reward_mae"], mae, rtol=1e-3)
    np.testing.assert_allclose(res["reward_mse"], mse, rtol=1e-3)


def test_action_sensitivity_shares_noise_between_real_and_random_actions():
    episodes = short_episodes(23)
    kw = dict(context=2, horizon=4, action_low=LOW, action_high=HIGH)
    exact = action_sensitivity(LinearSystemModel(), episodes, **kw)
    noisy = action_sensitivity(LinearSystemModel(noise=0.3), episodes, **kw)
    # the noise of the two imaginations cancels: only the action difference remains
    np.testing.assert_allclose(noisy["model"]["proprio"], exact["model"]["proprio"], rtol=1e-4)
    np.testing.assert_allclose(noisy["model"]["features"], exact["model"]["features"], rtol=1e-4)


def test_rankme_and_std_by_hand():
    x = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # singular values 3, 1 -> p = (0.75, 0.25)
    d = latent_diagnostics(x)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert d["effective_rank"] == pytest.approx(expected, rel=1e-9)
    assert d["std_mean"] == pytest.approx((3 / math.sqrt(2) + 1 / math.sqrt(2)) / 2, rel=1e-9)
    assert d["std_min"] == pytest.approx(1 / math.sqrt(2), rel=1e-9)
    assert d["collapsed"]  # rank 1.75 < min_rank 2


class FakeGoalEnv:
    """Episodes of 3 steps; the last step's info says success on even seeds; earlier steps say the opposite."""

    def reset(self, seed=None):
        self.seed, self.t = seed, 0
        return {"proprio": np.zeros(2, np.float32)}, {"success": False, "goal_proprio": np.ones(2),
                                                      "goal_distance": 1.0 + seed}

    def step(self, action):
        self.t += 1
        last = self.t == 3
        success = (self.seed % 2 == 0) if last else (self.seed % 2 == 1)
        return {"proprio": np.zeros(2, np.float32)}, 0.0, False, last, {
            "success": success, "goal_proprio": np.ones(2), "goal_distance": 0.1 * self.seed + self.t}


def test_goal_reaching_counts_the_last_steps_success():
    res = goal_reaching(GoalRecorder(), FakeGoalEnv(), episodes=4, seed=10, progress=False)  # seeds 10..13
    assert res["success_rate"] == 0.5
    assert res["start_distance"] == [11.0, 12.0, 13.0, 14.0]
    np.testing.assert_allclose(res["final_distance"], [4.0, 4.1, 4.2, 4.3])
    short = goal_reaching(GoalRecorder(), FakeGoalEnv(), episodes=2, seed=11, max_steps=2, progress=False)
    assert short["success_rate"] == 0.5  # seeds 11, 12 stopped at step 2: 11 says True, 12 says False
    np.testing.assert_allclose(short["final_distance"], [3.1, 3.2])
