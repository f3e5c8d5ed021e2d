"""The dm_control Gymnasium envs: API compliance, equality with raw dm_control, errors."""

import gymnasium as gym
import numpy as np
import pytest
from dm_control import suite
from gymnasium.utils.env_checker import check_env

import wm_robotics.envs as envs
from wm_robotics.envs import DMCEnv, EpisodeStateError


@pytest.mark.parametrize("name", envs.ENV_IDS)
def test_check_env_proprio_every_id(name):
    env = gym.make(name)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space["proprio"].dtype == np.float32


@pytest.mark.parametrize("name", ["wm_robotics/cartpole-swingup-v0", "wm_robotics/reacher-easy-goal-v1"])
@pytest.mark.parametrize("obs_mode", ["pixels", "pixels+proprio"])
def test_check_env_pixels_subset(name, obs_mode):
    env = gym.make(name, obs_mode=obs_mode, render_mode="rgb_array")
    check_env(env.unwrapped)


def test_registers_all_benchmark_tasks():
    assert len(suite.BENCHMARKING) == 28
    for domain, task in suite.BENCHMARKING:
        assert f"wm_robotics/{domain}-{task}-v0" in gym.registry
    assert "wm_robotics/ball_in_cup-catch-v0" in gym.registry


@pytest.mark.parametrize("domain,task", [("cartpole", "swingup"), ("walker", "walk"), ("cheetah", "run"),
                                         ("reacher", "easy"), ("ball_in_cup", "catch"), ("finger", "spin")])
def test_matches_raw_dm_control_step_for_step(domain, task):
    seed, repeat = 7, 2
    raw = suite.load(domain, task, task_kwargs={"random": seed})
    env = gym.make(f"wm_robotics/{domain}-{task}-v0", action_repeat=repeat)
    unwrapped = env.unwrapped
    obs, _ = env.reset(seed=seed)
    step = raw.reset()
    np.testing.assert_array_equal(obs["proprio"], unwrapped.flatten_observation(step.observation))
    spec = raw.action_spec()
    actions = np.random.default_rng(0).uniform(spec.minimum, spec.maximum, (60, *spec.shape))
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
        raw_reward = 0.0
        for _ in range(repeat):
            step = raw.step(action.astype(np.float32))
            raw_reward += step.reward
        np.testing.assert_array_equal(obs["proprio"], unwrapped.flatten_observation(step.observation))
        assert reward == pytest.approx(raw_reward, abs=1e-12)
        assert not terminated and not truncated


def test_proprio_layout_is_documented_key_order():
    env = DMCEnv("walker", "walk")
    assert list(env.proprio_keys) == ["orientations", "height", "velocity"]
    assert env.proprio_keys["height"] == slice(14, 15)
    assert env.observation_space["proprio"].shape == (24,)


@pytest.mark.parametrize("obs_mode,keys", [("proprio", {"proprio"}), ("pixels", {"pixels"}),
                                           ("pixels+proprio", {"pixels", "proprio"})])
def test_dict_observation_shapes_and_dtypes(obs_mode, keys):
    env = gym.make("wm_robotics/walker-walk-v0", obs_mode=obs_mode, image_size=48)
    obs, _ = env.reset(seed=0)
    assert set(obs) == keys == set(env.observation_space.spaces)
    if "pixels" in keys:
        assert obs["pixels"].shape == (48, 48, 3) and obs["pixels"].dtype == np.uint8
        assert env.observation_space["pixels"].dtype == np.uint8
        assert obs["pixels"].flags["C_CONTIGUOUS"]  # torch.as_tensor needs positive strides
        assert obs["pixels"].std() > 0
    if "proprio" in keys:
        assert obs["proprio"].dtype == np.float32
    assert env.action_space.dtype == np.float32


def test_seeding_is_reproducible():
    env = gym.make("wm_robotics/cheetah-run-v0", obs_mode="pixels+proprio")
    actions = np.random.default_rng(1).uniform(-1, 1, (20, 6)).astype(np.float32)

    def rollout(seed):
        obs, _ = env.reset(seed=seed)
        trace = [obs["proprio"], obs["pixels"]]
        for action in actions:
            obs, reward, *_ = env.step(action)
            trace += [obs["proprio"], obs["pixels"], np.array([reward])]
        return trace

    first, again, other = rollout(3), rollout(3), rollout(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    for _ in range(480):  # run the episode out: the next one on this env starts afresh (its control steps too)
        env.step(np.zeros(6, np.float32))
    assert all(np.array_equal(a, b) for a, b in zip(first, rollout(3)))
    assert not np.array_equal(first[0], other[0])
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        env.reset(seed=2**32)


def test_time_limit_truncates_in_agent_steps_then_refuses_to_step():
    env = gym.make("wm_robotics/cartpole-balance-v0", action_repeat=4)
    assert env.unwrapped.time_limit == 250
    env.reset(seed=0)
    action = np.zeros(1, np.float32)
    for step in range(1, 251):
        _, _, terminated, truncated, _ = env.step(action)
        assert not terminated
        assert truncated == (step == 250)
    with pytest.raises(EpisodeStateError, match="reset"):
        env.step(action)


def test_an_action_repeat_that_does_not_divide_1000_ends_at_the_suites_1000_control_steps():
    env = gym.make("wm_robotics/cartpole-balance-v0", action_repeat=3)
    assert env.unwrapped.time_limit == 334
    assert env.reset(seed=0)[1]["control_steps"] == 0
    steps = [env.step(np.zeros(1, np.float32)) for _ in range(334)]
    assert env.unwrapped.physics.time() == pytest.approx(10.0)  # 1000 control steps of 0.01 s, not 1002
    assert steps[-1][1] <= 1.0 < steps[-2][1]  # the last agent step: one control step's reward
    assert [info["control_steps"] for *_, info in steps] == [3] * 333 + [1]


def test_gymnasium_max_episode_steps_counts_agent_steps():
    env = gym.make("wm_robotics/cartpole-balance-v0", action_repeat=4, max_episode_steps=7)
    env.reset(seed=0)
    flags = [env.step(np.zeros(1, np.float32))[3] for _ in range(7)]
    assert flags == [False] * 6 + [True]
    assert env.unwrapped.physics.data.time == pytest.approx(7 * 4 * env.unwrapped.physics.timestep())


def test_step_before_reset_is_an_error():
    env = gym.make("wm_robotics/cartpole-swingup-v0")
    with pytest.raises(EpisodeStateError, match="before reset"):
        env.step(np.zeros(1, np.float32))


@pytest.mark.parametrize("name, action_repeat, fps", [("walker-walk-v0", 2, 20), ("reacher-easy-v0", 2, 25),
                                                      ("cheetah-run-v0", 4, 25)])
def test_render_fps_is_agent_steps_per_simulated_second(name, action_repeat, fps):
    env = gym.make(f"wm_robotics/{name}", action_repeat=action_repeat)  # so that RecordVideo plays in real time
    assert env.metadata["render_fps"] == pytest.approx(fps)


def test_render_returns_current_frame():
    env = gym.make("wm_robotics/cartpole-swingup-v0", obs_mode="pixels", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs["pixels"])


def test_render_fast_changes_only_shading():
    faithful = DMCEnv("walker", "walk", obs_mode="pixels")
    fast = DMCEnv("walker", "walk", obs_mode="pixels", render_fast=True)
    a, _ = faithful.reset(seed=0)
    b, _ = fast.reset(seed=0)
    difference = np.abs(a["pixels"].astype(int) - b["pixels"].astype(int)).mean()
    assert 0 < difference < 40


def test_task_default_camera():
    assert DMCEnv("quadruped", "walk").camera_id == 2
    assert DMCEnv("walker", "walk").camera_id == 0
    assert DMCEnv("quadruped", "walk", camera_id=0).camera_id == 0  # an explicit camera is kept


def test_render_fps_is_each_envs_own():
    walker, cheetah = DMCEnv("walker", "walk", action_repeat=2), DMCEnv("cheetah", "run", action_repeat=4)
    fps = [env.metadata["render_fps"] for env in (walker, cheetah, DMCEnv)]
    assert fps == [20, 25, 50]  # per instance: one env's rate never reaches another's or the class's


def test_a_time_limit_past_the_suites_runs_every_control_step():
    env = DMCEnv("cartpole", "balance", action_repeat=2, time_limit=600)
    env.reset(seed=0)
    for _ in range(600):
        env.step(np.zeros(1, np.float32))
    assert env.physics.time() == pytest.approx(600 * 2 * 0.01)  # 12 s, not the suite's 10


def test_unknown_id_lists_close_matches():
    with pytest.raises(gym.error.Error, match="cartpole-swingup-v0"):
        envs.make_env("cartpole-swingupp-v0")


@pytest.mark.parametrize(("name", "expected"), [
    ("cartpole-swingup-v0", ("cartpole", "swingup")),
    ("wm_robotics/ball_in_cup-catch-v0", ("ball_in_cup", "catch")),
    ("cartpole-swingup_sparse-v0", ("cartpole", "swingup_sparse")),
    ("reacher-hard-goal-v1", ("reacher", "hard")),
])
def test_suite_task_names_the_dm_control_task(name, expected):
    assert envs.suite_task(name) == expected


def test_suite_task_refuses_unknown_ids():
    with pytest.raises(gym.error.UnregisteredEnv, match="closest"):
        envs.suite_task("cartpole-swingup-v9")


def test_make_env_checks_max_episode_steps():
    for bad in (0, True):
        with pytest.raises(ValueError, match="max_episode_steps must be a positive integer"):
            envs.make_env("cartpole-swingup-v0", max_episode_steps=bad)


def test_env_kwargs_pass_every_env_setting_and_numpy_integers_are_integers():
    cfg = {"obs_mode": "pixels", "max_episode_steps": np.int64(7),
           "env": {"action_repeat": np.int64(4), "image_size": 48, "camera_id": 0, "render_fast": True}}
    kwargs = envs.env_kwargs(cfg)
    assert kwargs == {"obs_mode": "pixels", "action_repeat": 4, "image_size": 48, "camera_id": 0, "render_fast": True,
                      "max_episode_steps": 7}
    env = envs.make_env("cartpole-swingup-v0", **kwargs)
    assert env.unwrapped.action_repeat == 4 and env.unwrapped.render_fast and env.spec.max_episode_steps == 7
    with pytest.raises(ValueError, match="max_episode_steps must be a positive integer .* got 0"):  # not dropped
        envs.make_env("cartpole-swingup-v0", **envs.env_kwargs({**cfg, "max_episode_steps": 0}))


@pytest.mark.parametrize("kwargs,match", [
    ({"obs_mode": "rgb"}, "obs_mode must be one of"),
    ({"action_repeat": 0}, "action_repeat must be a positive integer"),
    ({"image_size": -64}, "image_size must be a positive integer"),
    ({"time_limit": 0}, "time_limit must be a positive integer"),
    ({"camera_id": 9}, "camera_id must be in"),
    ({"camera_id": 2}, r"camera_id must be in \[-1, 1\] or one of the camera names \['fixed', 'lookatcart'\]"),
    ({"camera_id": 1.7}, r"camera_id must be .*got 1.7"),  # was cut to camera 1
    ({"camera_id": "side"}, r"camera_id must be .*got 'side'"),
    ({"action_repeat": True}, "action_repeat must be a positive integer"),
    ({"image_size": 512, "obs_mode": "pixels"}, r"image_size must be at most 480 .*buffer is 640×480\), got 512"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make("wm_robotics/cartpole-swingup-v0", **kwargs)


@pytest.mark.parametrize("action,match", [
    (np.zeros(2), r"action must have shape \(1,\)"),
    (np.array([np.nan]), "action must be finite"),
    (np.array([np.inf]), "action must be finite"),
    (np.array([1.5]), "refused, not clipped"),
])
def test_bad_actions_are_refused(action, match):
    env = gym.make("wm_robotics/cartpole-swingup-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


@pytest.mark.parametrize("domain,task", [("walker", "walk"), ("manipulator", "bring_ball")])
def test_proprio_is_spec_order_row_major_flattening_of_the_raw_observation(domain, task):
    seed = 3
    raw = suite.load(domain, task, task_kwargs={"random": seed})
    env = DMCEnv(domain, task, action_repeat=1)
    obs, _ = env.reset(seed=seed)
    step = raw.reset()
    keys = list(raw.observation_spec())
    expected = np.concatenate([np.asarray(step.observation[k], np.float32).reshape(-1) for k in keys])
    np.testing.assert_array_equal(obs["proprio"], expected)
    for k in keys:
        np.testing.assert_array_equal(obs["proprio"][env.proprio_keys[k]],
                                      np.asarray(step.observation[k], np.float32).reshape(-1))


def test_the_free_camera_and_the_largest_image_the_buffer_holds_are_accepted():
    assert DMCEnv("cartpole", "swingup", camera_id=-1).camera_id == -1  # MuJoCo's free camera
    assert DMCEnv("cartpole", "swingup", image_size=480).image_size == 480  # its offscreen buffer is 640×480


def test_render_without_a_render_mode_returns_none():
    env = DMCEnv("cartpole", "swingup", obs_mode="pixels")
    env.reset(seed=0)
    assert env.render() is None


def _terminating(env, monkeypatch, at_time):
    """Every control step rewards 1; the task terminates once the simulated time reaches ``at_time``."""
    monkeypatch.setattr(env._task, "get_reward", lambda physics: 1.0)
    monkeypatch.setattr(env._task, "get_termination", lambda physics: 0.0 if physics.time() > at_time - 1e-9 else None)


def test_a_termination_inside_the_action_repeat_stops_the_step_there(monkeypatch):
    env = DMCEnv("cartpole", "balance", action_repeat=4)
    env.reset(seed=0)
    _terminating(env, monkeypatch, 0.02)  # after the second of the four control steps (0.01 s each)
    _, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert (reward, terminated, truncated, info["control_steps"]) == (2.0, True, False, 2)
    assert env.physics.time() == pytest.approx(0.02)
    with pytest.raises(EpisodeStateError, match="after the episode ended"):
        env.step(np.zeros(1, np.float32))


def test_a_termination_on_the_time_limits_last_step_is_not_a_truncation(monkeypatch):
    env = DMCEnv("cartpole", "balance", action_repeat=2, time_limit=1)
    env.reset(seed=0)
    _terminating(env, monkeypatch, 0.02)
    _, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert (reward, terminated, truncated, info["control_steps"]) == (2.0, True, False, 2)
