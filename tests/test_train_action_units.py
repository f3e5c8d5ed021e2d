"""Action units in the training loop on an env whose bounds are [0, 4], not [-1, 1]: the replay keeps env units,
the world model learns (and is diagnosed) in normalised [-1, 1] units, and the agent's actions reach the env in its
own units."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import wm_robotics.envs as envs
from tests.configs import tiny_config
from wm_robotics.data.episodes import list_episodes, load_episode
from wm_robotics.train import Trainer

LOW, HIGH = 0.0, 4.0


@pytest.fixture
def wide_action_envs(monkeypatch):
    """The run's envs with their actions rescaled to [LOW, HIGH] (the vector env in-process)."""
    make_env = envs.make_env

    def wide(name, **kwargs):
        return gym.wrappers.RescaleAction(make_env(name, **kwargs), np.float32(LOW), np.float32(HIGH))

    def wide_vector(name, num_envs, autoreset_mode, **kwargs):
        return gym.vector.SyncVectorEnv([lambda: wide(name, **kwargs)] * num_envs, autoreset_mode=autoreset_mode)

    monkeypatch.setattr(envs, "make_env", wide)
    monkeypatch.setattr(envs, "make_vector_env", wide_vector)


def test_replayed_env_actions_reach_the_model_normalised(tmp_path, monkeypatch, wide_action_envs, one_torch_thread):
    trainer = Trainer(tiny_config("steps=100", "prefill=80"), tmp_path)
    assert trainer.eval_env.action_space.high.tolist() == [HIGH]
    sampled, trained, diagnosed = [], [], []
    real_sample, real_loss = trainer.replay.sample, trainer.model.loss
    monkeypatch.setattr(trainer.replay, "sample", lambda: (lambda batch: sampled.append(batch["action"].copy())
                                                           or batch)(real_sample()))
    monkeypatch.setattr(trainer.model, "loss", lambda batch: trained.append(batch["action"].clone()) or
                        real_loss(batch))
    monkeypatch.setattr("wm_robotics.train.latent_health", lambda model, batch: diagnosed.append(
        batch["action"].clone()) or {})
    trainer.run()  # updates from the prefill's end; an evaluation at the end
    assert len(trained) == trainer.counters["updates"] >= 2 and len(diagnosed) == 1
    assert len(sampled) == len(trained) + len(diagnosed)
    for raw, seen in zip(sampled, [*trained, *diagnosed]):
        assert raw.max() > 1.5  # env units: the bounds matter
        torch.testing.assert_close(seen, torch.as_tensor(raw) / 2 - 1)  # [0, 4] → [-1, 1]


def test_the_agents_actions_reach_the_env_in_its_own_units(tmp_path, wide_action_envs, one_torch_thread):
    Trainer(tiny_config("steps=80", "prefill=40", "eval_every=1000"), tmp_path).run()
    actions = np.concatenate([load_episode(path)["action"] for path in list_episodes(tmp_path / "episodes")])
    agent = actions[20:]  # after the prefill's 20 random agent steps
    assert agent.min() >= LOW and agent.max() <= HIGH
    assert 1.0 < agent.mean() < 3.0 and agent.max() > 1.0  # about the middle of [0, 4], not of [-1, 1]
