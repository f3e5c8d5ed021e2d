"""More DMCEnv pins: raw dm_control equality with action repeats that do not divide 1000, actions on the bounds,
the camera the pixels come from, seeds, and close."""

import gymnasium as gym
import numpy as np
import pytest
from dm_control import suite

from wm_robotics.envs import DMCEnv


@pytest.mark.parametrize("domain,task,repeat", [("cartpole", "balance", 3), ("pendulum", "swingup", 1),
                                                ("walker", "stand", 4)])
def test_matches_raw_dm_control_to_the_end_of_the_episode(domain, task, repeat):
    seed = 11
    raw = suite.load(domain, task, task_kwargs={"random": seed})
    env = DMCEnv(domain, task, action_repeat=repeat)
    obs, info = env.reset(seed=seed)
    step = raw.reset()
    np.testing.assert_array_equal(obs["proprio"], env.flatten_observation(step.observation))
    assert info["control_steps"] == 0
    spec, rng = raw.action_spec(), np.random.default_rng(seed)
    for agent_step in range(env.time_limit):
        action = rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        raw_reward, applied = 0.0, 0
        for _ in range(repeat):
            step = raw.step(action)
            raw_reward += step.reward
            applied += 1
            if step.last():
                break
        np.testing.assert_array_equal(obs["proprio"], env.flatten_observation(step.observation))
        assert reward == pytest.approx(raw_reward, abs=1e-12)
        assert info["control_steps"] == applied
        assert not terminated  # the suite ends these episodes by time (discount 1): a truncation
        assert truncated == step.last() == (agent_step == env.time_limit - 1)


def test_actions_on_the_action_space_bounds_are_accepted():
    env = DMCEnv("walker", "walk")
    env.reset(seed=0)
    for action in (env.action_space.low, env.action_space.high, np.where(np.arange(6) % 2, 1.0, -1.0)):
        env.step(action)
    with pytest.raises(ValueError, match="refused, not clipped"):
        env.step(np.nextafter(env.action_space.high, np.inf))


@pytest.mark.parametrize("domain,task,camera_id,expected", [("cartpole", "swingup", 1, 1),
                                                             ("cartpole", "swingup", "lookatcart", 1),
                                                             ("quadruped", "walk", None, 2)])
def test_pixels_are_rendered_from_the_chosen_camera(domain, task, camera_id, expected):
    env = DMCEnv(domain, task, obs_mode="pixels", image_size=32, camera_id=camera_id)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["pixels"], env.physics.render(32, 32, camera_id=expected))
    assert not np.array_equal(obs["pixels"], env.physics.render(32, 32, camera_id=0))


@pytest.mark.parametrize("camera_id,render_fast", [(None, False), ("lookatcart", True)])
def test_a_pixels_wrapper_with_the_envs_render_kwargs_gives_the_envs_frames(camera_id, render_fast):
    from dm_control.suite.wrappers import pixels

    env = DMCEnv("cartpole", "swingup", obs_mode="pixels", image_size=48, camera_id=camera_id,
                 render_fast=render_fast)
    assert env.render_kwargs["camera_id"] == (0 if camera_id is None else 1)
    assert ("render_flag_overrides" in env.render_kwargs) == render_fast
    raw = pixels.Wrapper(suite.load("cartpole", "swingup", task_kwargs={"random": 3}),
                         render_kwargs=env.render_kwargs)
    obs, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs["pixels"], raw.reset().observation["pixels"])
    obs, *_ = env.step(np.array([0.7], np.float32))
    for _ in range(env.action_repeat):
        step = raw.step(np.array([0.7]))
    np.testing.assert_array_equal(obs["pixels"], step.observation["pixels"])


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_seeds_outside_dm_controls_range_are_refused_with_the_range(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        DMCEnv("cartpole", "swingup").reset(seed=seed)


def test_a_numpy_integer_seed_is_the_same_seed_as_a_python_int():
    env = DMCEnv("cartpole", "swingup")
    np.testing.assert_array_equal(env.reset(seed=np.int64(3))[0]["proprio"], env.reset(seed=3)[0]["proprio"])


def test_a_seeded_reset_seeds_the_gymnasium_generator_too():
    env = DMCEnv("cartpole", "swingup")
    env.reset(seed=5)
    first = env.np_random.random()
    env.reset(seed=5)
    assert env.np_random.random() == first


def test_close_closes_the_dm_control_environment(monkeypatch):
    env = gym.make("wm_robotics/cartpole-swingup-v0", obs_mode="pixels")
    closed = []
    monkeypatch.setattr(env.unwrapped._dm_env, "close", lambda: closed.append(True))
    env.close()
    assert closed == [True]
