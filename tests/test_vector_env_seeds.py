"""More vector-env pins: per-sub-env seeds, both autoreset modes on real envs, the worker count, NumPy settings."""

import gymnasium as gym
import numpy as np

from wm_robotics.envs import DMCEnv, control_steps_taken, make_env, make_vector_env


def test_sub_env_i_is_seeded_with_seed_plus_i_like_a_single_env():
    envs = make_vector_env("cartpole-swingup-v0", 3, asynchronous=False)
    obs, _ = envs.reset(seed=7)
    single = DMCEnv("cartpole", "swingup")
    for i in range(3):
        np.testing.assert_array_equal(obs["proprio"][i], single.reset(seed=7 + i)[0]["proprio"])
    again, _ = envs.reset(seed=7)
    np.testing.assert_array_equal(again["proprio"], obs["proprio"])
    envs.close()


def test_next_step_autoreset_ignores_the_action_and_starts_a_fresh_episode():
    envs = make_vector_env("cartpole-swingup-v0", 1, max_episode_steps=2)
    obs, _ = envs.reset(seed=3)
    first = obs["proprio"].copy()
    action = np.ones((1, 1), np.float32)
    for _ in range(2):
        obs, reward, terminated, truncated, info = envs.step(action)
    assert truncated.tolist() == [True] and info["control_steps"].tolist() == [2]
    obs, reward, terminated, truncated, info = envs.step(action)  # the reset step
    assert reward.tolist() == [0.0] and not terminated.any() and not truncated.any()
    assert info["control_steps"].tolist() == [0] and envs.envs[0].unwrapped.physics.time() == 0.0
    assert not np.array_equal(obs["proprio"], first)  # the next episode's own initial state, unseeded
    envs.close()


def test_same_step_autoreset_reports_the_last_agent_steps_control_steps():
    envs = make_vector_env("cartpole-balance-v0", 1, action_repeat=3, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    action = np.zeros((1, 1), np.float32)
    for _ in range(333):
        _, _, terminated, truncated, info = envs.step(action)
        assert not (terminated | truncated).any() and control_steps_taken(info, truncated).tolist() == [3]
    obs, _, terminated, truncated, info = envs.step(action)  # control steps 999 and 1000 of the suite's 1000
    assert truncated.tolist() == [True] and info["control_steps"].tolist() == [0]  # the new episode's reset
    assert control_steps_taken(info, truncated | terminated).tolist() == [1]
    assert envs.envs[0].unwrapped.physics.time() == 0.0
    assert not np.array_equal(info["final_obs"][0]["proprio"], obs["proprio"][0])
    envs.close()


def test_an_asynchronous_single_env_has_one_worker(monkeypatch):
    calls = []
    monkeypatch.setattr(gym.vector, "AsyncVectorEnv", lambda fns, **kwargs: calls.append(fns))
    make_vector_env("walker-walk-v0", 1, asynchronous=True)
    assert len(calls[0]) == 1


def test_numpy_counts_reach_gymnasium_as_ints():
    env = make_env("cartpole-swingup-v0", max_episode_steps=np.int64(5))
    assert type(env.spec.max_episode_steps) is int and env.spec.max_episode_steps == 5
    envs = make_vector_env("cartpole-swingup-v0", np.int64(1))  # was refused as not an integer
    assert envs.num_envs == 1 and type(envs.num_envs) is int
    envs.close()
