"""The entry points run end to end from a fresh interpreter (Hydra, real env, real files)."""

import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.configs import ROOT, composed, run_script, script_module
from wm_robotics import rollout
from wm_robotics.data.episodes import load_episode


def test_gymnasium_make_from_fresh_interpreter(tmp_path):
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('wm_robotics.envs:wm_robotics/ball_in_cup-catch-v0', obs_mode='pixels')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs['pixels'].shape)\n"
    )
    assert "(64, 64, 3)" in run_script("-c", code, cwd=tmp_path)


def test_collect_then_export_video(tmp_path):
    out = run_script(ROOT / "scripts/collect.py", "episodes=2", "max_episode_steps=10", "obs_mode=pixels",
                     f"hydra.run.dir={tmp_path / 'run'}", "video_size=96", cwd=tmp_path)
    assert "2 episodes of cartpole-swingup-v0" in out
    episodes = sorted((tmp_path / "run" / "episodes").glob("*.npz"))
    assert [p.name for p in episodes] == ["episode-000000.npz", "episode-000001.npz"]
    frames = iio.imread(tmp_path / "run" / "episodes.mp4")
    assert frames.shape == (22, 96, 96, 3)

    run_script(ROOT / "scripts/export_video.py", f"source={tmp_path / 'run' / 'episodes'}", "episodes=1",
               f"out={tmp_path / 'clip.gif'}", "size=64", cwd=tmp_path)
    gif = iio.imread(tmp_path / "clip.gif")
    assert gif.shape[0] == 11 and gif.shape[1:3] == (64, 64)
    out = run_script(ROOT / "scripts/export_video.py", "episodes=1", "max_episode_steps=5",
                     f"out={tmp_path / 'live.gif'}", "size=64",
                     cwd=tmp_path)  # no source, no checkpoint: live random episodes
    assert "episode 0: 5 steps" in out and iio.imread(tmp_path / "live.gif").shape[0] == 6


def test_collect_proprio_episodes_from_a_seed_without_a_video(tmp_path):
    actions = []
    for run in ("a", "b"):
        out = run_script(ROOT / "scripts/collect.py", "obs_mode=proprio", "episodes=1", "seed=3", "max_episode_steps=5",
                         f"hydra.run.dir={tmp_path / run}", cwd=tmp_path)  # the default video= needs pixels: skipped
        assert "1 episodes of cartpole-swingup-v0" in out and "video ->" not in out
        assert [p.name for p in (tmp_path / run / "episodes").iterdir()] == ["episode-000003.npz"]
        actions.append(load_episode(tmp_path / run / "episodes" / "episode-000003.npz")["action"])
    np.testing.assert_array_equal(*actions)  # the random policy is seeded too


def test_live_random_episodes_take_consecutive_seeds(monkeypatch):
    script = script_module("export_video")
    cfg = OmegaConf.create(composed(["episodes=3", "seed=7", "max_episode_steps=2"], "export_video"))
    seeds = []
    monkeypatch.setattr(rollout, "run_episode", lambda env, policy, seed: seeds.append(seed) or {})
    assert len(script._episodes(cfg)) == 3 and seeds == [7, 8, 9]


@pytest.mark.parametrize("script, bad, message", [
    ("collect.py", "obs_mode=rgb", "collect.py: obs_mode must be one of"),
    ("collect.py", "video=episodes.avi", "collect.py: video path must end in one of"),
    ("collect.py", "env.id=cartpole-swingdown-v0", "collect.py: unknown environment 'cartpole-swingdown-v0'; closest:"),
    ("export_video.py", "checkpoint=missing.pt", "export_video.py: no checkpoint at"),
    ("export_video.py", "out=clip.avi", "export_video.py: video path must end in one of"),
    ("export_video.py", "task=walker_walk", "export_video.py: task=walker_walk picks the env of a checkpoint's video"),
    ("export_video.py", "checkpoint=run env=walker_walk", "with checkpoint= the video plays the checkpoint's task"),
    ("export_video.py", "source=run episodes=-1", "export_video.py: episodes must be at least 1, got -1"),
    ("collect.py", "video=episodes.gif fps=60", "collect.py: fps must be positive and at most 50 for a GIF"),
    ("evaluate.py", "checkpoint=missing.pt torch_threads=0", "evaluate.py: torch_threads must be a positive integer"),
])
def test_bad_arguments_give_one_line_before_any_work(tmp_path, script, bad, message):
    command = [sys.executable, str(ROOT / "scripts" / script), *bad.split(), f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "run" / "episodes").exists()


def test_update_speed_refuses_bad_counts_and_a_folder_without_a_checkpoint(tmp_path):
    script = str(ROOT / "scripts/update_speed.py")
    for args, message in (([str(tmp_path), "--updates", "0"], "--rounds and --updates must be at least 1, got 3 and 0"),
                          ([str(tmp_path)], "has no config.yaml or checkpoints/latest.pt")):
        result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and message in result.stderr, result.stderr
