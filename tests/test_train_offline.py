"""Offline mode of the training loop: learn only from a folder of episode files, resume, bad data."""

import csv
import subprocess
import sys

import numpy as np
import pytest

import wm_robotics.envs as envs
from tests.configs import ROOT, TINY, tiny_config
from wm_robotics.checkpoint import load_checkpoint
from wm_robotics.data.episodes import list_episodes, load_episode
from wm_robotics.rollout import collect_episodes, random_policy
from wm_robotics.train import Trainer

OFFLINE = ["offline.eval_every=1000", "offline.log_every=5", "offline.checkpoint_every=10"]


@pytest.fixture(scope="module")
def episode_folder(tmp_path_factory):
    """Four random 20-step proprio episodes of cartpole-swingup, as scripts/collect.py writes them."""
    folder = tmp_path_factory.mktemp("episodes")
    env = envs.make_env("cartpole-swingup-v0", obs_mode="proprio", max_episode_steps=20)
    collect_episodes(env, random_policy(env.action_space, 0), 4, folder, seed=0, progress=False)
    return folder


def test_offline_run_trains_from_the_folder_without_collecting(tmp_path, episode_folder):
    before = {p.name: load_episode(p)["action"].copy() for p in list_episodes(episode_folder)}
    final = Trainer(tiny_config(f"offline.data={episode_folder}", "offline.updates=20", *OFFLINE), tmp_path).run()
    counters = load_checkpoint(tmp_path)["counters"]
    assert counters["updates"] == 20 and counters["env_steps"] == 0 and counters["episodes"] == 0
    assert not list((tmp_path / "episodes").glob("*.npz"))  # nothing collected, nothing copied
    after = {p.name: load_episode(p)["action"] for p in list_episodes(episode_folder)}
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    train_rows = [row for row in rows if row.get("loss/total")]
    assert [int(row["step"]) for row in train_rows] == [5, 10, 15, 20]  # the clock is the update count
    assert "eval_return" in final and "episode_return" not in rows[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_offline_loss_falls_on_the_folder(tmp_path, episode_folder, precision):
    Trainer(tiny_config(f"offline.data={episode_folder}", "offline.updates=150", "seq_len=16", *OFFLINE,
                        f"precision={precision}"), tmp_path).run()
    losses = [float(row["loss/total"]) for row in csv.DictReader((tmp_path / "metrics.csv").open())
              if row.get("loss/total")]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_offline_run_resumes_from_another_directory(tmp_path, episode_folder):
    relative = episode_folder.relative_to(episode_folder.parent)
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "scripts/train.py"), *TINY, *OFFLINE, f"offline.data={relative}",
               "offline.updates=10", f"hydra.run.dir={run}"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=episode_folder.parent)
    assert first.returncode == 0, first.stderr[-2000:]
    assert load_checkpoint(run)["counters"]["updates"] == 10
    resumed = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), f"resume={run}", "offline.updates=20"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stdout and "offline: " in resumed.stdout
    assert not (tmp_path / "runs").exists()  # Hydra wrote into the resumed run, not into a fresh folder here
    assert (run / ".hydra" / "overrides.yaml").read_text() != next((run / ".hydra").glob("resume_*/overrides.yaml")
                                                                   ).read_text()  # the first command's is kept
    counters = load_checkpoint(run)["counters"]
    assert counters["updates"] == 20 and counters["env_steps"] == 0


def test_offline_data_that_does_not_fit_gives_a_clear_error(tmp_path, episode_folder):
    with pytest.raises(ValueError, match=r"offline.data=.*obs/pixels.*obs_mode=pixels"):
        Trainer(tiny_config(f"offline.data={episode_folder}", "obs_mode=pixels", "offline.updates=5"), tmp_path).run()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no episode files"):
        Trainer(tiny_config(f"offline.data={empty}", "offline.updates=5"), tmp_path / "run").run()


def test_offline_data_is_checked_before_the_run_folder_is_claimed(tmp_path, episode_folder):
    command = [sys.executable, str(ROOT / "scripts/train.py"), *TINY, *OFFLINE, "offline.updates=5"]
    for data, message in ((tmp_path / "missing", "no episode files (*.npz) there"),
                          (episode_folder, "no episode has seq_len=64 observations to train on")):
        run = tmp_path / f"run_{data.name}"
        result = subprocess.run([*command, f"offline.data={data}", "seq_len=64", f"hydra.run.dir={run}"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
        assert not (run / "config.yaml").exists()  # the corrected command can use the same folder


def test_an_offline_folder_larger_than_the_replay_says_what_it_left_out(tmp_path, episode_folder, capsys):
    config = tiny_config(f"offline.data={episode_folder}", "offline.updates=1", "replay_capacity=50")
    trainer = Trainer(config, tmp_path)
    trainer.start()
    assert trainer.replay.num_episodes == 2  # 21 observations each: the newest two fit in 50
    assert f"offline: 42 steps in 2 episodes from {episode_folder} (the 2 oldest files left out: replay_capacity=50)" \
        in capsys.readouterr().out
