"""Goal-image variants: the goal is rendered, exposed in info, and is what the reward rewards; info hands out copies,
the goal frame is rendered as the episode's frames are, goals span the domain's range, and success reads the task's
own target radius."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

from wm_robotics.envs import GoalDMCEnv, env_id, register_all  # importing the package registers the ids


@pytest.mark.parametrize("name", ["wm_robotics/reacher-easy-goal-v1", "wm_robotics/point_mass-easy-goal-v1"])
def test_goal_info_and_reaching_the_goal(name):
    env = gym.make(name, obs_mode="pixels+proprio")
    obs, info = env.reset(seed=5)
    unwrapped = env.unwrapped
    assert info["goal_pixels"].shape == (64, 64, 3) and info["goal_pixels"].dtype == np.uint8
    assert info["goal_proprio"].shape == obs["proprio"].shape
    assert not np.array_equal(info["goal_pixels"], obs["pixels"])
    assert not info["success"] and info["goal_distance"] > 0

    # Teleport the robot to the goal state: success, full reward, and the goal image is what we see.
    physics = unwrapped.physics
    physics.named.data.qpos[list(unwrapped._goal_joints)] = unwrapped.goal_joints
    physics.data.qvel[:] = 0
    physics.forward()
    assert unwrapped.goal_distance() == pytest.approx(0, abs=1e-9)
    assert unwrapped._task.get_reward(physics) == pytest.approx(1.0, abs=0.05)
    np.testing.assert_allclose(unwrapped._observation()["pixels"], info["goal_pixels"], atol=1)
    assert unwrapped._info()["success"]


def test_goal_is_reproducible_with_seed_and_changes_across_seeds():
    env = gym.make("wm_robotics/reacher-easy-goal-v1")
    _, first = env.reset(seed=1)
    _, again = env.reset(seed=1)
    _, other = env.reset(seed=2)
    np.testing.assert_array_equal(first["goal_pixels"], again["goal_pixels"])
    np.testing.assert_array_equal(first["goal_proprio"], again["goal_proprio"])
    assert not np.array_equal(first["goal_proprio"], other["goal_proprio"])


def test_v1_goals_lie_within_the_wrists_limits_and_v0_keeps_the_old_draws():
    new, old = (gym.make(f"wm_robotics/reacher-easy-goal-v{version}", obs_mode="proprio") for version in (1, 0))
    limit = new.unwrapped.physics.named.model.jnt_range["wrist", 1]  # 160 degrees
    assert limit == pytest.approx(np.radians(160))
    redrawn = 0
    for seed in range(100_000, 100_012):  # seeds 100002 and 100011 draw a v0 goal past the limit
        _, info_new = new.reset(seed=seed)
        _, info_old = old.reset(seed=seed)
        assert abs(new.unwrapped.goal_joints[1]) <= limit
        if abs(old.unwrapped.goal_joints[1]) > limit:
            redrawn += 1
            assert not np.allclose(info_new["goal_proprio"], info_old["goal_proprio"])
        else:  # a draw within the limits: the same goal in both versions
            np.testing.assert_array_equal(info_new["goal_proprio"], info_old["goal_proprio"])
    assert redrawn == 2


def test_goal_info_on_every_step():
    env = gym.make("wm_robotics/point_mass-easy-goal-v1")
    _, reset_info = env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    np.testing.assert_array_equal(info["goal_pixels"], reset_info["goal_pixels"])
    assert info["goal_pixels"] is not reset_info["goal_pixels"]


def test_observation_near_goal_moves_only_the_probe():
    env = gym.make("wm_robotics/reacher-easy-goal-v1", obs_mode="pixels+proprio")
    obs, info = env.reset(seed=3)
    unwrapped = env.unwrapped
    at_goal, distance = unwrapped.observation_near_goal([0.0, 0.0])
    np.testing.assert_allclose(at_goal["proprio"], info["goal_proprio"], atol=1e-6)
    np.testing.assert_allclose(at_goal["pixels"], info["goal_pixels"], atol=1)
    assert distance == pytest.approx(0, abs=1e-9)
    moved, moved_distance = unwrapped.observation_near_goal([1.0, 0.5], [2.0, 0.0])
    assert moved_distance > 0.02 and moved["proprio"][4] == pytest.approx(2.0)  # shoulder velocity
    np.testing.assert_allclose(moved["proprio"][:2], unwrapped.goal_joints + [1.0, 0.5], atol=1e-6)  # moved by +offset
    np.testing.assert_array_equal(unwrapped._observation()["proprio"], obs["proprio"])  # the episode is untouched
    assert unwrapped.goal_distance() == pytest.approx(info["goal_distance"])
    with pytest.raises(ValueError, match=r"velocity must have one value per goal joint .*got shape \(3,\)"):
        unwrapped.observation_near_goal([1.0, 0.5], [2.0, 0.0, 1.0])  # refused, and the episode still untouched
    with pytest.raises(ValueError, match=r"offset must have one value per goal joint \['shoulder', 'wrist'\]"):
        unwrapped.observation_near_goal([0.5])  # would move both joints by 0.5
    np.testing.assert_array_equal(unwrapped._observation()["proprio"], obs["proprio"])
    assert unwrapped.goal_distance() == pytest.approx(info["goal_distance"])


def test_the_goal_frame_uses_the_envs_camera_and_a_goal_env_built_directly_keeps_goals_within_limits():
    env = gym.make("wm_robotics/reacher-easy-goal-v1", obs_mode="pixels", camera_id=1)
    _, info = env.reset(seed=3)
    at_goal, _ = env.unwrapped.observation_near_goal([0.0, 0.0])
    assert np.abs(at_goal["pixels"].astype(int) - info["goal_pixels"]).mean() < 1  # the same camera's view
    direct = GoalDMCEnv("reacher", "easy")
    direct.reset(seed=100002)  # a draw that bends the wrist past its limit in the -v0 ids
    assert abs(direct.goal_joints[1]) < 2.79


def _point_mass_at(env, offset):
    u = env.unwrapped
    physics = u.physics
    physics.named.data.qpos[list(u._goal_joints)] = u.goal_joints + np.asarray(offset)
    physics.data.qvel[:] = 0
    physics.forward()
    return u._info()


def test_goal_success_is_within_the_target_radius_and_distance_is_euclidean():
    env = gym.make("wm_robotics/point_mass-easy-goal-v1")
    env.reset(seed=4)
    radius = float(env.unwrapped.physics.named.model.geom_size["target", 0])
    d = 0.9 * radius / np.sqrt(2)  # diagonal offset: L2 0.9 r, L1 1.27 r
    info = _point_mass_at(env, [d, d])
    assert info["goal_distance"] == pytest.approx(0.9 * radius, rel=1e-6) and info["success"]
    d = 1.5 * radius / np.sqrt(2)
    info = _point_mass_at(env, [d, d])
    assert info["goal_distance"] == pytest.approx(1.5 * radius, rel=1e-6) and not info["success"]


def test_probe_at_the_goal_mid_episode_has_zero_velocity():
    env = gym.make("wm_robotics/reacher-easy-goal-v1", obs_mode="proprio")
    _, info = env.reset(seed=3)
    for _ in range(5):
        obs, *_ = env.step(np.ones(2, np.float32))
    assert np.abs(obs["proprio"][4:]).max() > 0.1  # the episode's robot is moving
    at_goal, distance = env.unwrapped.observation_near_goal([0.0, 0.0])
    np.testing.assert_allclose(at_goal["proprio"], info["goal_proprio"], atol=1e-6)
    np.testing.assert_array_equal(info["goal_proprio"][4:], 0.0)


def test_goal_ids_default_to_the_newest_version_and_registering_again_changes_nothing():
    assert env_id("reacher", "easy", goal=True) == "wm_robotics/reacher-easy-goal-v1"
    assert env_id("reacher", "easy", goal=True, version=0) == "wm_robotics/reacher-easy-goal-v0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is registered over
        register_all()


def test_goal_info_arrays_are_copies_that_a_caller_may_change():
    env = gym.make("wm_robotics/point_mass-easy-goal-v1")
    _, info = env.reset(seed=2)
    kept = info["goal_proprio"].copy()
    info["goal_proprio"][:] = 99.0
    info["goal_pixels"][:] = 0
    _, _, _, _, after = env.step(np.zeros(2, np.float32))
    np.testing.assert_array_equal(after["goal_proprio"], kept)
    np.testing.assert_array_equal(env.unwrapped.goal_proprio, kept)
    assert after["goal_pixels"].any()


def test_a_fast_rendering_env_renders_its_goal_frame_fast_too():
    env = gym.make("wm_robotics/reacher-easy-goal-v1", obs_mode="pixels", render_fast=True)
    _, info = env.reset(seed=3)
    at_goal, _ = env.unwrapped.observation_near_goal([0.0, 0.0])  # the episode's own renderer, at the goal
    np.testing.assert_allclose(at_goal["pixels"], info["goal_pixels"], atol=1)


def test_reacher_goals_span_the_whole_circle_of_the_shoulder():
    env = gym.make("wm_robotics/reacher-easy-goal-v1", obs_mode="proprio")
    shoulders = []
    for seed in range(16):
        env.reset(seed=seed)
        shoulders.append(env.unwrapped.goal_joints[0])
    assert min(shoulders) < -np.pi / 2 and max(shoulders) > np.pi / 2 and max(np.abs(shoulders)) <= np.pi


@pytest.mark.parametrize("name", ["wm_robotics/reacher-easy-goal-v1", "wm_robotics/reacher-hard-goal-v1"])
def test_reacher_success_is_within_the_targets_radius_the_stricter_of_it_and_the_rewards_band(name):
    env = gym.make(name, obs_mode="proprio")
    env.reset(seed=0)
    unwrapped = env.unwrapped
    physics = unwrapped.physics
    radius = float(physics.named.model.geom_size["target", 0])
    assert radius == pytest.approx(0.05 if "easy" in name else 0.015)
    arm = np.linalg.norm(physics.named.model.geom_pos["target", :2])  # the goal's distance from the shoulder
    for fraction in (0.9, 1.1):  # the shoulder turned off the goal: the finger a chord of fraction * radius away
        physics.named.data.qpos[["shoulder", "wrist"]] = unwrapped.goal_joints
        physics.named.data.qpos["shoulder"] += 2 * np.arcsin(fraction * radius / (2 * arm))
        physics.forward()
        info = unwrapped._info()
        assert info["goal_distance"] == pytest.approx(fraction * radius, rel=1e-6)
        assert info["success"] is (fraction < 1)
        assert unwrapped._task.get_reward(physics) == 1.0  # the reward's band (plus the finger's radius) is wider
