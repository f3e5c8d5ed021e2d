"""The training loop in small pieces: what collection records and who acts, the random streams a resume continues,
the world model's gradient clipping and the offline data check."""

import random

import numpy as np
import pytest
import torch

import wm_robotics.envs as envs
from tests.configs import tiny_config
from wm_robotics.data.episodes import list_episodes, load_episode, save_episode
from wm_robotics.rollout import random_policy, run_episode
from wm_robotics.train import Trainer


def _replayed(cfg, seed, actions):
    """The proprio observations of a fresh env reset with ``seed`` and stepped with ``actions``."""
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    obs, _ = env.reset(seed=seed)
    seen = [obs["proprio"]]
    for action in actions:
        seen.append(env.step(action)[0]["proprio"])
    env.close()
    return np.stack(seen)


def test_collected_episodes_hold_the_envs_own_steps_and_a_resume_reseeds_by_the_episode_count(tmp_path,
                                                                                             one_torch_thread):
    cfg = tiny_config("seed=3", "steps=40", "eval_every=1000")
    Trainer(cfg, tmp_path).run()  # one 20-step episode, random actions (prefill 80)
    Trainer(tiny_config("seed=3", "steps=80", "eval_every=1000", "resume=true"), tmp_path).run()
    first, second = (load_episode(path) for path in list_episodes(tmp_path / "episodes"))
    for index, episode in enumerate((first, second)):  # reset seeds seed·1000 + episodes so far
        np.testing.assert_array_equal(episode["obs/proprio"], _replayed(cfg, 3000 + index, episode["action"]))
    space = envs.make_env(cfg["env"]["id"]).action_space
    space.seed(3 + 1)  # the resumed attempt's random actions: seed + episodes so far
    np.testing.assert_array_equal(second["action"], np.stack([space.sample() for _ in range(20)]))


def test_the_agent_acts_once_the_prefill_ends_and_is_told_where_each_episode_starts(tmp_path, monkeypatch,
                                                                                    one_torch_thread):
    trainer = Trainer(tiny_config("steps=100", "prefill=40", "train_ratio=1", "eval_every=1000"), tmp_path)
    real_act, firsts = trainer.agent.act, []
    monkeypatch.setattr(trainer.agent, "act", lambda obs, is_first, sample: firsts.append(is_first.copy()) or
                        real_act(obs, is_first, sample))
    trainer.run()  # 50 agent steps of 2 env steps; the prefill's 40 env steps are the first episode's 20
    assert len(firsts) == 30 and [call for call, first in enumerate(firsts) if first.all()] == [0, 20]
    assert not any(first.any() for call, first in enumerate(firsts) if call not in (0, 20))


def test_a_resumed_run_draws_on_from_the_random_states_of_its_checkpoint(tmp_path, one_torch_thread):
    Trainer(tiny_config("steps=80", "eval_every=1000"), tmp_path).run()  # its checkpoint is the last thing it does
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    resumed = Trainer(tiny_config("steps=80", "eval_every=1000", "resume=true"), tmp_path)  # seeds from the config
    resumed.restore()
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def _trainer_with_an_episode(tmp_path, *overrides):
    """A tiny trainer whose replay holds one random 20-step episode (no run, no collecting)."""
    trainer = Trainer(tiny_config(*overrides), tmp_path)
    trainer.envs.close()
    episode = run_episode(trainer.eval_env, random_policy(trainer.eval_env.action_space, 0), seed=0)
    trainer.replay.add_episode(episode, save=False)
    return trainer


def test_an_update_clips_the_world_models_gradient_to_grad_clip(tmp_path, one_torch_thread):
    trainer = _trainer_with_an_episode(tmp_path, "model.grad_clip=0.01")
    metrics = trainer.update()
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()
                                                    if p.grad is not None]))
    assert metrics["model/grad_norm"] > 0.1  # the norm before clipping is reported
    assert clipped.item() == pytest.approx(0.01, rel=1e-4)


def test_offline_episodes_with_other_action_dims_are_refused_by_name(tmp_path, one_torch_thread):
    env = envs.make_env("cartpole-swingup-v0", max_episode_steps=20)  # proprio (5,), 1 action dim
    episode = run_episode(env, random_policy(env.action_space, 0), seed=0)
    save_episode(tmp_path / "data" / "episode-000000.npz", {**episode, "action": np.repeat(episode["action"], 2, 1)})
    trainer = Trainer(tiny_config(f"offline.data={tmp_path / 'data'}", "offline.updates=1"), tmp_path / "run")
    with pytest.raises(ValueError, match=r"episodes hold shapes \{'action': \(2,\)\}, this run .* needs "
                                         r"\{'action': \(1,\)\}"):
        trainer._load_offline()
