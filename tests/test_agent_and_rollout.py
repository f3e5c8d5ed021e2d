"""The deployable Agent (it filters with its previous action; a checkpoint's task check) and episode collection
(seeds, file names, reproducible random policies)."""

import numpy as np
import pytest
import torch
from torch import nn

import wm_robotics.envs as envs
from wm_robotics.agent import Agent, check_task
from wm_robotics.data.episodes import list_episodes, load_episode
from wm_robotics.models.base import WorldModel
from wm_robotics.rollout import collect_episodes, random_policy


class SeesPreviousAction(WorldModel):
    """The state is the last observation; ``step`` records the previous action it is given."""

    obs_keys, action_dim, feature_dim = ("proprio",), 1, 1

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.previous_actions = []

    def initial(self, batch_size):
        return {"x": torch.zeros(batch_size, 1)}

    def step(self, state, action, obs, is_first):
        self.previous_actions.append(action.clone())
        return {"x": obs["proprio"].float()}

    def features(self, state):
        return state["x"]


class TanhPolicy(nn.Module):
    def policy(self, features, sample=True):
        return torch.tanh(features)

    def to_env(self, action):
        return action


def test_agent_filters_each_step_with_its_previous_action():
    model = SeesPreviousAction()
    agent = Agent(model, TanhPolicy(), torch.device("cpu"))
    first = agent.act({"proprio": np.array([[0.5], [-1.0]], np.float32)}, np.array([True, True]))
    agent.act({"proprio": np.array([[0.2], [0.3]], np.float32)}, np.array([False, False]))
    torch.testing.assert_close(model.previous_actions[0], torch.zeros(2, 1))
    torch.testing.assert_close(model.previous_actions[1], torch.as_tensor(first))
    np.testing.assert_allclose(first, np.tanh([[0.5], [-1.0]]), rtol=1e-6)


def test_a_task_with_the_same_observations_but_other_actions_does_not_fit():
    env = envs.make_env("reacher-easy-v0")  # proprio (6,), 2 actions
    payload = {"obs_shapes": {"proprio": [6]}, "action_low": [-1.0], "config": {"env": {"id": "acrobot-swingup-v0"}}}
    with pytest.raises(ValueError, match=r"\(observations \{'proprio': \(6,\)\}, 1 action dims\) but task "
                                         r"'reacher-easy-v0' has observations \{'proprio': \(6,\)\}, 2 action dims"):
        check_task(payload, env, "reacher-easy-v0")
    check_task({**payload, "action_low": [-1.0, -1.0]}, env, "reacher-easy-v0")


def test_collected_episodes_are_named_and_seeded_from_the_seed_and_reproducible(tmp_path):
    runs = []
    for folder in ("a", "b"):
        env = envs.make_env("cartpole-swingup-v0", max_episode_steps=3)
        paths = collect_episodes(env, random_policy(env.action_space, 7), 2, tmp_path / folder, seed=3, progress=False)
        assert [path.name for path in paths] == ["episode-000003.npz", "episode-000004.npz"]
        runs.append([load_episode(path) for path in paths])
    (first, second), again = runs
    assert not np.array_equal(first["obs/proprio"][0], second["obs/proprio"][0])  # reset seeds 3 and 4
    for episode, same in zip(runs[0], again):
        for key in episode:
            np.testing.assert_array_equal(episode[key], same[key])  # the policy's actions too


def test_collecting_into_a_folder_never_overwrites_its_episode_files(tmp_path):
    env = envs.make_env("cartpole-swingup-v0", max_episode_steps=3)
    first = collect_episodes(env, random_policy(env.action_space, 0), 3, tmp_path, seed=0, progress=False)
    kept = [path.read_bytes() for path in first]
    with pytest.raises(FileExistsError, match=r"already holds \['episode-000001.npz', 'episode-000002.npz'\]: "
                                              r"episode files are named by their seed; collect with seed=3"):
        collect_episodes(env, random_policy(env.action_space, 1), 5, tmp_path, seed=1, progress=False)
    assert [path.read_bytes() for path in first] == kept and len(list_episodes(tmp_path)) == 3
    more = collect_episodes(env, random_policy(env.action_space, 3), 2, tmp_path, seed=3, progress=False)
    assert [path.name for path in more] == ["episode-000003.npz", "episode-000004.npz"]
