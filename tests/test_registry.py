"""More registry pins: unknown names, every goal version resolvable, registration idempotent and wrapper-free."""

import warnings

import gymnasium as gym
import pytest

import wm_robotics.envs as envs


def test_a_name_close_to_nothing_lists_every_valid_id():
    with pytest.raises(gym.error.UnregisteredEnv, match="valid ids") as caught:
        envs.check_env_id("x" * 40)  # nothing alike: the whole list, not a guess
    assert all(name in str(caught.value) for name in envs.ENV_IDS)


def test_a_near_miss_lists_several_close_ids():
    with pytest.raises(gym.error.UnregisteredEnv) as caught:
        envs.check_env_id("cartpole-swingupp-v0")
    assert "cartpole-swingup-v0" in str(caught.value) and "cartpole-swingup_sparse-v0" in str(caught.value)


@pytest.mark.parametrize("name, close", [("zzzz", None), ("walker_walk", ["wm_robotics/walker-walk-v0"]),
                                         ("dog-run-v0", ["wm_robotics/humanoid-run-v0", "wm_robotics/walker-run-v0"])])
def test_close_ids_are_judged_without_the_shared_namespace_and_other_suite_tasks_are_pointed_to(name, close):
    with pytest.raises(gym.error.UnregisteredEnv) as caught:  # the namespace made every id look half alike
        envs.check_env_id(name)
    message = str(caught.value)
    assert (f"closest: {close}" in message) if close else "valid ids" in message
    assert "wm_robotics.envs.DMCEnv(domain, task) makes any other suite task" in message


@pytest.mark.parametrize("version", [0, 1])
def test_both_goal_versions_are_valid_ids(version):
    assert envs.check_env_id(f"reacher-easy-goal-v{version}") == f"wm_robotics/reacher-easy-goal-v{version}"
    assert envs.suite_task(f"point_mass-easy-goal-v{version}") == ("point_mass", "easy")
    assert len(set(envs.ENV_IDS)) == len(envs.ENV_IDS) == 28 + 2 * 3


def test_registering_again_changes_nothing_and_warns_nothing():
    spec = gym.spec("wm_robotics/cartpole-swingup-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        envs.register_all()
    assert gym.spec("wm_robotics/cartpole-swingup-v0") is spec


def test_made_envs_carry_no_per_step_checker_wrappers():
    env = envs.make_env("cartpole-swingup-v0")
    assert env is env.unwrapped  # no PassiveEnvChecker or OrderEnforcing in the hot path
    assert type(gym.make("wm_robotics/cartpole-swingup-v0", max_episode_steps=3)) is gym.wrappers.TimeLimit
