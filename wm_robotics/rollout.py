"""Run a policy on a simulator env and record episodes in the episode-file format."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from wm_robotics.data.episodes import EpisodeRecorder, next_episode_index, save_episode

Policy = Callable[[dict], np.ndarray]


def random_policy(action_space: gym.spaces.Box, seed: int | None = None) -> Policy:
    """Uniform random actions in the action space, reproducible with ``seed``."""
    action_space.seed(seed)
    return lambda obs: action_space.sample()


def run_episode(env: gym.Env, policy: Policy, seed: int | None = None) -> dict[str, np.ndarray]:
    """One full episode (until terminated or truncated) as a dict in the episode-file format."""
    obs, _ = env.reset(seed=seed)
    recorder = EpisodeRecorder(obs)
    done = False
    while not done:
        action = policy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        recorder.add(action, obs, reward, terminated, truncated)
        done = terminated or truncated
    return recorder.episode()


def collect_episodes(
    env: gym.Env, policy: Policy, episodes: int, out_dir: str | Path, seed: int = 0, progress: bool = True
) -> list[Path]:
    """Run ``episodes`` episodes (seeds ``seed``, ``seed+1``, …) and save each as its own file, named by its seed; a
    file of those names already in ``out_dir`` is a ``FileExistsError`` before any episode runs (never overwritten)."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes <= 0:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    targets = [Path(out_dir) / f"episode-{seed + index:06d}.npz" for index in range(episodes)]
    taken = [path.name for path in targets if path.exists()]
    if taken:
        raise FileExistsError(f"{out_dir} already holds {taken[:3]}{' ...' if len(taken) > 3 else ''}: episode files "
                              f"are named by their seed; collect with seed={next_episode_index(out_dir)} (after the "
                              "folder's last) or into another folder")
    paths = []
    bar = tqdm(range(episodes), desc="collect", unit="ep", disable=not progress)
    for index in bar:
        episode = run_episode(env, policy, seed=seed + index)
        total = float(episode["reward"].sum())
        paths.append(save_episode(targets[index], episode))
        bar.set_postfix(ret=f"{total:.1f}", steps=len(episode["action"]))
    return paths
