"""Collect episodes of a task with a random policy; save .npz files and an MP4 of them.

    python scripts/collect.py                                   # 3 pixel episodes of cartpole-swingup
    python scripts/collect.py env=walker_walk episodes=10 obs_mode=proprio video=null
"""

from __future__ import annotations

import gymnasium as gym
import hydra
import numpy as np
from omegaconf import DictConfig

import wm_robotics.envs as envs
from wm_robotics.data.episodes import load_episode
from wm_robotics.rollout import collect_episodes, random_policy
from wm_robotics.video import check_panel_size, episode_frames, video_path, write_video


@hydra.main(config_path="../configs", config_name="collect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        if cfg.episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {cfg.episodes}")
        if cfg.video:
            video_path(cfg.video, cfg.fps)
            check_panel_size(cfg.video_size, "video_size")
        env = envs.make_env(cfg.env.id, **envs.env_kwargs(cfg))
    except (ValueError, gym.error.Error) as error:  # bad settings or an unknown env id: one line, no traceback
        raise SystemExit(f"collect.py: {error}") from error
    try:
        paths = collect_episodes(env, random_policy(env.action_space, cfg.seed), cfg.episodes, cfg.out, cfg.seed)
    except FileExistsError as error:  # checked before the first episode
        raise SystemExit(f"collect.py: {error}") from error
    episodes = [load_episode(p) for p in paths]
    returns = [float(ep["reward"].sum()) for ep in episodes]
    print(f"{len(paths)} episodes of {cfg.env.id} -> {paths[0].parent.resolve()}")
    print(f"return {np.mean(returns):.1f} ± {np.std(returns):.1f} (random policy), "
          f"{sum(len(e['action']) for e in episodes)} steps")
    if cfg.video and "obs/pixels" in episodes[0]:
        frames = [f for i, ep in enumerate(episodes) for f in episode_frames(ep, cfg.video_size, f"episode {i}")]
        print(f"video -> {write_video(cfg.video, frames, cfg.fps).resolve()}")


if __name__ == "__main__":
    main()
