"""Export saved episodes (or a live rollout) as an annotated MP4 / GIF.

    python scripts/export_video.py source=path/to/episodes out=clip.mp4
    python scripts/export_video.py env=walker_walk episodes=1 out=walker.gif
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from wm_robotics.data.episodes import list_episodes, load_episode
from wm_robotics.video import episode_frames, write_video


def _episodes(cfg: DictConfig) -> list[dict]:
    if cfg.source is not None:
        source = Path(to_absolute_path(cfg.source))
        paths = list_episodes(source) if source.is_dir() else [source]
        if not paths or not paths[0].exists():
            raise FileNotFoundError(f"no episode files at {source}")
        return [load_episode(p) for p in paths[: cfg.episodes]]
    import wm_robotics.envs as envs
    from wm_robotics.rollout import random_policy, run_episode

    env = envs.make_env(
        cfg.env.id, obs_mode="pixels", action_repeat=cfg.env.action_repeat, image_size=cfg.env.image_size,
        camera_id=cfg.env.camera_id, render_fast=cfg.env.render_fast, max_episode_steps=cfg.max_episode_steps,
    )
    policy = random_policy(env.action_space, cfg.seed)
    return [run_episode(env, policy, seed=cfg.seed + i) for i in range(cfg.episodes)]


@hydra.main(config_path="../configs", config_name="export_video", version_base="1.3")
def main(cfg: DictConfig) -> None:
    episodes = _episodes(cfg)
    frames = []
    for index, episode in enumerate(episodes):
        frames += episode_frames(episode, cfg.size, f"episode {index}")
        print(f"episode {index}: {len(episode['action'])} steps, return {episode['reward'].sum():.1f}")
    path = write_video(to_absolute_path(cfg.out), frames, cfg.fps)
    print(f"{len(frames)} frames -> {path}")


if __name__ == "__main__":
    main()
