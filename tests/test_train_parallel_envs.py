"""The training loop with two parallel envs: agent steps, env steps, episodes and the train ratio's updates are
counted over every env, not per vector step."""

from functools import partial

import numpy as np

import wm_robotics.envs as envs
from tests.configs import tiny_config
from wm_robotics.data.episodes import list_episodes, load_episode
from wm_robotics.train import Trainer


def test_two_envs_count_every_envs_steps_and_the_train_ratio_updates_by_hand(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setattr(envs, "make_vector_env", partial(envs.make_vector_env, asynchronous=False))  # in-process
    # 2 envs, action repeat 2, 10-step episodes; prefill 20 env steps = 10 agent steps (5 vector steps);
    # 32 / (2·8) = 2 updates per agent step; 48 env steps = 12 vector steps = 24 agent steps
    trainer = Trainer(tiny_config("num_envs=2", "max_episode_steps=10", "steps=48", "prefill=20", "train_ratio=32",
                                  "eval_every=1000"), tmp_path)
    seen, acts = [], []
    real_periodic, real_act = trainer._periodic, trainer.agent.act
    monkeypatch.setattr(trainer, "_periodic", lambda *args, **kwargs: seen.append(dict(trainer.counters)) or
                        real_periodic(*args, **kwargs))
    monkeypatch.setattr(trainer.agent, "act", lambda obs, is_first, sample: acts.append(is_first.copy()) or
                        real_act(obs, is_first, sample))
    trainer.run()
    assert [row["agent_steps"] for row in seen] == [2 * k for k in range(1, 13)]
    assert [row["env_steps"] for row in seen] == [4 * k for k in range(1, 13)]
    # no update before both envs' first episodes are in the replay (vector step 10); then the ratio's count,
    # 2 · (agent steps - 10), + 1 for the first update at the prefill's end
    expected = [0 if k < 10 else 2 * (2 * k - 10) + 1 for k in range(1, 13)]
    assert [row["updates"] for row in seen] == expected and trainer.counters["updates"] == 29
    assert len(acts) == 7 and all(first.shape == (2,) for first in acts)  # the agent acts once the prefill's 5 end
    assert [call for call, first in enumerate(acts) if first.all()] == [5] and not any(
        first.any() for call, first in enumerate(acts) if call != 5)  # both envs' second episodes start together
    assert trainer.counters["episodes"] == 4  # two full, two cut short by the end of the run
    episodes = [load_episode(path) for path in list_episodes(tmp_path / "episodes")]
    assert [len(episode["action"]) for episode in episodes] == [10, 10, 2, 2]
    assert not np.array_equal(episodes[0]["obs/proprio"], episodes[1]["obs/proprio"])  # two envs, two episodes
    for env in (0, 1):  # each env's second episode starts from its reset, not from where its first ended
        assert not np.array_equal(episodes[2 + env]["obs/proprio"][0], episodes[env]["obs/proprio"][-1])
