"""Vector envs: one process per env, batched shapes, Gymnasium's next-step autoreset."""

import os

import gymnasium as gym
import numpy as np
import pytest

from wm_robotics.envs import control_steps_taken, make_vector_env


def test_async_vector_env_shapes_and_autoreset():
    envs = make_vector_env("cartpole-swingup-v0", 2, obs_mode="pixels+proprio", max_episode_steps=3)
    try:
        assert isinstance(envs, gym.vector.AsyncVectorEnv)
        obs, _ = envs.reset(seed=0)
        assert obs["pixels"].shape == (2, 64, 64, 3) and obs["proprio"].shape == (2, 5)
        first = obs["proprio"].copy()
        assert not np.array_equal(first[0], first[1])  # seeds 0 and 1
        actions = np.zeros((2, 1), np.float32)
        for step in range(3):
            obs, reward, terminated, truncated, _ = envs.step(actions)
            assert truncated.tolist() == [step == 2] * 2 and not terminated.any()
        obs, reward, terminated, truncated, _ = envs.step(actions)  # the autoreset step
        assert reward.tolist() == [0.0, 0.0] and not truncated.any()
        assert obs["proprio"].shape == (2, 5)
    finally:
        envs.close()


def test_single_env_is_sync():
    envs = make_vector_env("walker-walk-v0", 1)
    assert isinstance(envs, gym.vector.SyncVectorEnv)
    same_step = make_vector_env("walker-walk-v0", 1, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    assert same_step.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP  # what the training loop uses
    same_step.close()
    obs, _ = envs.reset(seed=0)
    assert obs["proprio"].shape == (1, 24)
    envs.close()


@pytest.mark.parametrize("num_envs", [0, -1, 1.5, True])
def test_num_envs_must_be_positive(num_envs):
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env("walker-walk-v0", num_envs)
    with pytest.raises(ValueError, match="max_episode_steps must be a positive integer"):
        make_vector_env("walker-walk-v0", 1, max_episode_steps=0)


def test_control_steps_of_an_ended_env_come_from_its_final_info():
    info = {"control_steps": np.array([0, 2]), "final_info": {"control_steps": np.array([1, 0])}}
    assert control_steps_taken(info, np.array([True, False])).tolist() == [1, 2]
    assert control_steps_taken({"control_steps": np.array([2, 2])}, np.array([False, False])).tolist() == [2, 2]


@pytest.fixture
def async_calls(monkeypatch):
    """The (env fns, keyword arguments) of each AsyncVectorEnv built, without starting worker processes."""
    calls = []
    monkeypatch.setattr(gym.vector, "AsyncVectorEnv", lambda fns, **kwargs: calls.append((fns, kwargs)) or "async")
    return calls


def test_asynchronous_overrides_the_choice_by_number_of_envs(async_calls):
    assert make_vector_env("walker-walk-v0", 1, asynchronous=True) == "async"
    envs = make_vector_env("walker-walk-v0", 2, asynchronous=False)
    assert isinstance(envs, gym.vector.SyncVectorEnv) and envs.num_envs == 2
    envs.close()
    assert len(async_calls) == 1


def test_a_sync_vector_env_builds_its_envs_with_the_given_settings():
    envs = make_vector_env("walker-walk-v0", 1, obs_mode="pixels", image_size=32, action_repeat=4)
    assert envs.single_observation_space["pixels"].shape == (32, 32, 3)
    assert envs.envs[0].unwrapped.action_repeat == 4
    envs.close()


def test_an_async_vector_env_gets_the_start_method_and_autoreset_mode(async_calls):
    make_vector_env("walker-walk-v0", 3, context="forkserver", autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    fns, kwargs = async_calls[0]
    assert len(fns) == 3
    assert kwargs == {"context": "forkserver", "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}


def test_a_worker_renders_on_one_thread_unless_the_user_chose(async_calls, monkeypatch):
    make_vector_env("walker-walk-v0", 2, image_size=32)
    make_worker = async_calls[0][0][0]
    monkeypatch.setenv("LP_NUM_THREADS", "4")
    assert make_worker().unwrapped.image_size == 32 and os.environ["LP_NUM_THREADS"] == "4"
    monkeypatch.delenv("LP_NUM_THREADS")
    make_worker()  # the parent builds one to read the spaces: its own rendering keeps every core
    assert "LP_NUM_THREADS" not in os.environ
    parent = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: parent + 1)  # as in a worker process
    make_worker()
    assert os.environ["LP_NUM_THREADS"] == "1"


@pytest.mark.filterwarnings("ignore::UserWarning")  # Gymnasium logs the worker's error as it re-raises it
def test_a_worker_forked_from_a_process_that_rendered_refuses_to_render_instead_of_hanging():
    from wm_robotics.envs import make_env
    from wm_robotics.envs.rendering import RenderingError

    rendering = make_env("cartpole-swingup-v0", obs_mode="pixels", image_size=32)
    rendering.reset(seed=0)  # this process has rendered: a fork of it would hang in its first frame
    rendering.close()
    envs = make_vector_env("cartpole-swingup-v0", 2, context="fork", obs_mode="pixels", image_size=32)
    try:
        with pytest.raises(RenderingError, match=r"forked from one that had already rendered.*'spawn'"):
            envs.reset(seed=0)
    finally:
        envs.close(terminate=True)
