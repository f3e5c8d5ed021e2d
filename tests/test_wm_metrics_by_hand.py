"""More world-model metrics checked by hand: window selection and alignment, the latent scale (spread), seeding,
pixel units, early-ending replays, latent health and planner timing."""

import numpy as np
import pytest
import torch

from tests.test_wm_metrics import (
    HIGH,
    LOW,
    A,
    B,
    BiasedModel,
    LinearSystemEnv,
    LinearSystemModel,
    offsets,
    short_episodes,
)
from wm_robotics.models.base import WorldModel
from wm_robotics.wm_metrics import (
    VARIANCE_FLOOR,
    action_sensitivity,
    latent_diagnostics,
    latent_health,
    open_loop_errors,
    planner_timing,
    posterior_features,
    replay_branch,
    variance,
    windows,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT, HORIZON, STARTS = 2, 4, (0, 6, 12, 18)  # 23-step episodes: 24 observations, windows of 6 start at these


def spread_of(points):
    """Mean L2 distance of points (N, F) to their mean."""
    return np.linalg.norm(points - points.mean(0), axis=-1).mean()


def real_futures(episodes, starts=STARTS):
    """The recorded observations after the last context step of every window: (W, H, 4)."""
    return np.stack([ep["obs/proprio"][t0 + CONTEXT:t0 + CONTEXT + HORIZON] for ep in episodes for t0 in starts
                     ]).astype(np.float64)


def test_windows_align_actions_rewards_and_episode_starts_and_stop_at_per_episode():
    episodes = short_episodes(23)
    batch, index = windows(episodes, 6, per_episode=3)
    assert index == [(0, 0), (0, 6), (0, 12), (1, 0), (1, 6), (1, 12)]
    assert batch["is_first"].tolist() == [[t0 == 0 and t == 0 for t in range(6)] for _, t0 in index]
    for w, (i, t0) in enumerate(index):  # action[t] and reward[t] led to obs t: zero at the episode start
        np.testing.assert_array_equal(batch["obs/proprio"][w], episodes[i]["obs/proprio"][t0:t0 + 6])
        for t in range(6):
            step = t0 + t - 1
            expected = (np.zeros(2), 0.0) if step < 0 else (episodes[i]["action"][step], episodes[i]["reward"][step])
            np.testing.assert_array_equal(batch["action"][w, t], expected[0])
            assert batch["reward"][w, t] == pytest.approx(expected[1])


def test_per_episode_caps_the_windows_of_open_loop_errors_and_posterior_features():
    episodes = short_episodes(23)
    res = open_loop_errors(BiasedModel(), episodes, CONTEXT, HORIZON, LOW, HIGH, per_episode=2)
    assert res["windows"] == 4
    features = posterior_features(LinearSystemModel(), episodes, 6, LOW, HIGH, per_episode=2)
    expected = np.concatenate([ep["obs/proprio"][t0:t0 + 6] for ep in episodes for t0 in (0, 6)])
    np.testing.assert_allclose(features.numpy(), expected)


class StartRecordingModel(LinearSystemModel):
    """The exact toy model, noting the is_first flags observe gets."""

    def observe(self, obs, action, is_first, state=None):
        self.is_first = torch.as_tensor(is_first)
        return super().observe(obs, action, is_first, state)


def test_only_the_first_step_of_an_episode_reaches_observe_as_a_start():
    model = StartRecordingModel()
    open_loop_errors(model, short_episodes(23), CONTEXT, HORIZON, LOW, HIGH)
    expected = torch.zeros(8, CONTEXT + HORIZON, dtype=torch.bool)
    expected[[0, 4], 0] = True  # the windows at t0 = 0 of both episodes
    assert torch.equal(model.is_first, expected)


def test_latent_l2_relative_divides_by_the_spread_of_the_real_future_features():
    episodes = short_episodes(23)
    res = open_loop_errors(BiasedModel(), episodes, CONTEXT, HORIZON, LOW, HIGH)
    spread = spread_of(real_futures(episodes).reshape(-1, 4))
    np.testing.assert_allclose(res["latent_l2_relative"], np.linalg.norm(offsets(HORIZON), axis=-1) / spread,
                               rtol=1e-4)


def test_action_sensitivity_features_are_the_feature_distance_over_the_spread_by_hand():
    episodes = short_episodes(23)
    res = action_sensitivity(LinearSystemModel(), episodes, CONTEXT, HORIZON, LOW, HIGH, seed=7)
    random = np.random.default_rng(7).uniform(LOW, HIGH, (8, HORIZON, 2))  # the perturbation, drawn in env units
    distance = np.zeros((8, HORIZON))
    for w, (ep, t0) in enumerate((ep, t0) for ep in episodes for t0 in STARTS):
        delta = np.zeros(4)
        for h in range(HORIZON):  # imagined step h + 1 follows the recorded action[t0 + CONTEXT - 1 + h]
            delta = A @ delta + B @ (ep["action"][t0 + CONTEXT - 1 + h] - random[w, h])
            distance[w, h] = np.linalg.norm(delta)
    spread = spread_of(real_futures(episodes).reshape(-1, 4))
    np.testing.assert_allclose(res["model"]["features"], distance.mean(0) / spread, rtol=1e-3)
    assert res["model_mean"]["features"] == pytest.approx(np.mean(res["model"]["features"]))


class NoisyPosteriorModel(LinearSystemModel):
    """The toy model with Gaussian noise on the posterior and on every imagined step."""

    def __init__(self):
        super().__init__(noise=0.1)

    def observe(self, obs, action, is_first, state=None):
        post, last = super().observe(obs, action, is_first, state)
        x = post["x"] + 0.1 * torch.randn_like(post["x"])
        return {"x": x}, {"x": x[:, -1]}


def test_stochastic_models_are_measured_with_the_given_seed_and_leave_the_global_rng_alone():
    episodes = short_episodes(23)
    model, kwargs = NoisyPosteriorModel(), dict(action_low=LOW, action_high=HIGH, seed=3)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        runs.append(open_loop_errors(model, episodes, CONTEXT, HORIZON, **kwargs))
        runs.append(action_sensitivity(model, episodes, CONTEXT, HORIZON, **kwargs))
        assert torch.equal(torch.get_rng_state(), state)
    assert runs[0] == runs[2] and runs[1] == runs[3]
    assert open_loop_errors(model, episodes, CONTEXT, HORIZON, LOW, HIGH, seed=4) != runs[0]
    # the reconstruction's latent_l2: two posterior samples of the same data differ by noise N(0, 2 · 0.1²) per dim
    recon = runs[0]["reconstruction"]
    assert 0.2 < recon["latent_l2"] < 0.35
    spread = runs[0]["latent_l2"][0] / runs[0]["latent_l2_relative"][0]
    assert spread > 1.5 and recon["latent_l2_relative"] == pytest.approx(recon["latent_l2"] / spread, rel=1e-5)


class PixelDriftModel(WorldModel):
    """The state is the observed image in [0, 1]; each imagined step brightens it by 0.02 plus 0.1 · action[0]."""

    obs_keys, action_dim, feature_dim = ("pixels",), 1, 16

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def observe(self, obs, action, is_first, state=None):
        x = obs["pixels"].float() / 255.0  # (B, T, 4, 4, 1)
        return {"x": x}, {"x": x[:, -1]}

    def imagine(self, state, horizon, actions=None, policy=None):
        steps = 0.02 * torch.arange(1, horizon + 1) + 0.1 * actions[..., 0].cumsum(1)  # (B, H)
        return {"x": state["x"].unsqueeze(1) + steps[:, :, None, None, None]}, actions

    def features(self, state):
        return state["x"].flatten(-3)

    def decode(self, state, keys=None):
        return {"pixels": state["x"]}


def pixel_episode(seed, steps=10):
    """A still uint8 image (values 0..150, so a drift stays inside [0, 1]) under zero actions."""
    image = np.random.default_rng(seed).integers(0, 151, (4, 4, 1), dtype=np.uint8)
    return {"obs/pixels": np.repeat(image[None], steps + 1, 0), "action": np.zeros((steps, 1), np.float32),
            "reward": np.zeros(steps, np.float32)}


def test_pixel_errors_are_in_unit_range_units():
    episodes = [pixel_episode(0), pixel_episode(1)]
    pixels = np.concatenate([ep["obs/pixels"] for ep in episodes]).astype(np.float64) / 255
    assert variance(episodes, "pixels") == pytest.approx(pixels.var(), rel=1e-9)  # one scalar in [0, 1] units
    res = open_loop_errors(PixelDriftModel(), episodes, context=2, horizon=3)
    np.testing.assert_allclose(res["pixel_mse"], (0.02 * np.arange(1, 4)) ** 2, rtol=1e-4)
    assert res["reconstruction"]["pixel_mse"] == pytest.approx(0, abs=1e-12)
    sensitivity = action_sensitivity(PixelDriftModel(), episodes, context=2, horizon=3, seed=5)
    assert sensitivity["windows"] == 4
    random = np.random.default_rng(5).uniform(-1.0, 1.0, (4, 3, 1))[..., 0]  # 2 windows an episode; zero real actions
    expected = (0.1 * random.cumsum(1)) ** 2 / pixels.var()
    np.testing.assert_allclose(sensitivity["model"]["pixels"], expected.mean(0), rtol=1e-4)


def test_variance_is_per_dimension_for_proprio_and_floored():
    episodes = short_episodes(5)
    for episode in episodes:
        episode["obs/proprio"] = episode["obs/proprio"].copy()
        episode["obs/proprio"][:, 1] = 2.5  # a constant dimension
    allobs = np.concatenate([ep["obs/proprio"] for ep in episodes]).astype(np.float64)
    expected = allobs.var(0)
    expected[1] = VARIANCE_FLOOR
    np.testing.assert_allclose(variance(episodes, "proprio"), expected, rtol=1e-9)


class EndingEnv(LinearSystemEnv):
    """The toy system, terminated after ``end`` steps; a step after the end moves the state far away."""

    end = 5

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.steps > self.end:
            obs = {"proprio": obs["proprio"] + 100.0}
        return obs, reward, self.steps >= self.end, False, info


def test_replay_branch_repeats_the_last_observation_after_the_episode_ends():
    env = EndingEnv()
    actions = np.random.default_rng(0).uniform(LOW, HIGH, (8, 2)).astype(np.float32)
    out = replay_branch(env, {"action": actions[:2]}, seed=1, branch=2, actions=actions[2:], keys=["proprio"])
    out = out["proprio"]
    assert out.shape == (6, 4)
    env.reset(seed=1)
    direct = [env.step(action)[0]["proprio"] for action in actions[:5]][2:]  # steps 3..5, then the end
    np.testing.assert_array_equal(out[:3], direct)
    np.testing.assert_array_equal(out[3:], np.repeat(direct[-1:], 3, 0))


def test_latent_diagnostics_dead_dims_are_those_strictly_below_min_std():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # stds 1 and 0
    d = latent_diagnostics(x, min_std=1.0)
    assert d["std_min"] == 0 and d["dead_fraction"] == 0.5 and d["thresholds"] == {"min_rank": 2.0, "min_std": 1.0}


def test_latent_health_reports_the_diagnostics_and_warns_only_on_collapse(capsys):
    model = LinearSystemModel()
    generator = torch.Generator().manual_seed(0)
    batch = {"obs/proprio": torch.randn(4, 16, 4, generator=generator), "action": torch.zeros(4, 16, 2),
             "is_first": torch.zeros(4, 16, dtype=torch.bool)}
    healthy = latent_health(model, batch)
    diag = latent_diagnostics(batch["obs/proprio"])
    assert healthy == {f"latent/{name}": float(diag[name])
                       for name in ("std_mean", "std_min", "dead_fraction", "effective_rank", "collapsed")}
    assert healthy["latent/collapsed"] == 0.0 and "collapsed" not in capsys.readouterr().out
    collapsed = latent_health(model, {**batch, "obs/proprio": torch.ones(4, 16, 4)})
    assert collapsed["latent/collapsed"] == 1.0 and collapsed["latent/dead_fraction"] == 1.0
    assert "WARNING: the latent has collapsed: effective rank 1.00 of 4" in capsys.readouterr().out


class CountingController:
    """Stands in for an MPCController: counts resets and the observations it acted on."""

    planner_name = "fake"

    def __init__(self):
        self.log = []

    def reset(self):
        self.log.append("reset")

    def act(self, obs):
        self.log.append(obs)
        return np.zeros(2, np.float32)


def test_planner_timing_resets_then_warms_up_and_times_the_rest():
    controller = CountingController()
    controller.log.append("stale")
    result = planner_timing(controller, [0, 1, 2, 3, 4], warmup=2)
    assert controller.log == ["stale", "reset", 0, 1, 2, 3, 4]
    assert result["planner"] == "fake" and result["actions_timed"] == 3 and result["ms_per_action"] >= 0
    with pytest.raises(ValueError, match="need more than warmup=2 observations to time, got 2"):
        planner_timing(CountingController(), [0, 1], warmup=2)


class NoDecoderModel(LinearSystemModel):
    """The exact toy model without a decoder."""

    def decode(self, state, keys=None):
        return {}


def test_action_sensitivity_without_a_decoder_measures_only_model_features():
    env = LinearSystemEnv()
    episodes = short_episodes(23)
    res = action_sensitivity(NoDecoderModel(), episodes, CONTEXT, HORIZON, LOW, HIGH, env=env, seeds=[1, 2])
    assert set(res["model"]) == {"features"} and not {"real", "real_mean", "ratio"} & set(res)


@pytest.mark.parametrize("env, seeds", [(True, None), (False, [1, 2]), (True, [1])])
def test_a_simulator_comparison_needs_the_env_and_one_seed_per_episode(env, seeds):
    with pytest.raises(ValueError, match="the simulator comparison needs env and one reset seed per episode"):
        action_sensitivity(LinearSystemModel(), short_episodes(23), CONTEXT, HORIZON, LOW, HIGH,
                           env=LinearSystemEnv() if env else None, seeds=seeds)


@pytest.mark.parametrize("length, per_episode, message", [(6, 0, "windows per episode must be at least 1, got 0"),
                                                          (0, 2, "length must be at least 1, got 0")])
def test_posterior_features_names_a_bad_window_setting(length, per_episode, message):
    with pytest.raises(ValueError, match=message):
        posterior_features(LinearSystemModel(), short_episodes(2), length, LOW, HIGH, per_episode=per_episode)
