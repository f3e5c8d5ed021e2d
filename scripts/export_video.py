"""Export episodes as an annotated MP4 / GIF, or a checkpoint's imagination beside the simulator.

    python scripts/export_video.py source=path/to/episodes out=clip.mp4
    python scripts/export_video.py env=walker_walk episodes=1 out=walker.gif
    python scripts/export_video.py checkpoint=runs/<...>/checkpoints/latest.pt task=cartpole_swingup \
        episodes=2 out=clip.mp4 context=5 horizon=50 planner_view=true
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from wm_robotics.checkpoint import CheckpointError, load_checkpoint
from wm_robotics.data.episodes import EpisodeFormatError, list_episodes, load_episode
from wm_robotics.video import check_panel_size, episode_frames, video_path, write_video

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _saved_episodes(cfg: DictConfig) -> list[dict]:
    source = Path(to_absolute_path(cfg.source))
    paths = list_episodes(source) if source.is_dir() else [source]
    if not paths or not paths[0].exists():
        raise FileNotFoundError(f"no episode files at {source}")
    return [load_episode(p) for p in paths[: cfg.episodes]]


def _episodes(cfg: DictConfig) -> list[dict]:
    if cfg.source is not None:
        return _saved_episodes(cfg)
    import wm_robotics.envs as envs
    from wm_robotics.rollout import random_policy, run_episode

    env = envs.make_env(cfg.env.id, **envs.env_kwargs({**cfg, "obs_mode": "pixels"}))
    policy = random_policy(env.action_space, cfg.seed)
    return [run_episode(env, policy, seed=cfg.seed + i) for i in range(cfg.episodes)]


def _task_id(task: str | None) -> str | None:
    """An env config name (``configs/env/<task>.yaml``) → its id; anything else is taken as an id."""
    if task is None:
        return None
    config = CONFIGS / "env" / f"{task}.yaml"
    return OmegaConf.load(config).id if config.exists() else task


def _imagination(cfg: DictConfig) -> None:
    from wm_robotics.imagination_video import export_imagination_video

    checkpoint = to_absolute_path(cfg.checkpoint)
    payload = load_checkpoint(checkpoint, map_location="cpu")
    paths = export_imagination_video(
        payload, to_absolute_path(cfg.out), task=_task_id(cfg.task),
        source=_saved_episodes(cfg) if cfg.source is not None else None, episodes=cfg.episodes, seed=cfg.seed,
        context=cfg.context, horizon=cfg.horizon, size=cfg.size, fps=cfg.fps, max_episode_steps=cfg.max_episode_steps,
        device=cfg.device, checkpoint=checkpoint, planner_steps=list(cfg.planner_steps) if cfg.planner_view else (),
        planner=cfg.planner, planner_horizon=cfg.planner_horizon,
    )
    for path in paths:
        print(f"-> {path}")


@hydra.main(config_path="../configs", config_name="export_video", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        video_path(cfg.out, cfg.fps)
        check_panel_size(cfg.size)
        if cfg.episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {cfg.episodes}")
        if cfg.checkpoint is None and cfg.task is not None:
            raise ValueError(f"task={cfg.task} picks the env of a checkpoint's video; without checkpoint= choose the "
                             f"env with env=<name> (configs/env)")
        if cfg.checkpoint is not None and any(line.startswith("env=") for line in HydraConfig.get().overrides.task):
            raise ValueError("with checkpoint= the video plays the checkpoint's task: pick another with "
                             "task=<env name or id>, not env=")
        export(cfg)
    except (CheckpointError, EpisodeFormatError, FileNotFoundError, ValueError) as error:  # one line, no traceback
        raise SystemExit(f"export_video.py: {error}") from error


def export(cfg: DictConfig) -> None:
    """The imagination video of ``cfg.checkpoint``, or the annotated episodes of ``cfg.source`` / ``cfg.env``."""
    if cfg.checkpoint is not None:
        _imagination(cfg)
        return
    episodes = _episodes(cfg)
    frames = []
    for index, episode in enumerate(episodes):
        frames += episode_frames(episode, cfg.size, f"episode {index}")
        print(f"episode {index}: {len(episode['action'])} steps, return {episode['reward'].sum():.1f}")
    path = write_video(to_absolute_path(cfg.out), frames, cfg.fps)
    print(f"{len(frames)} frames -> {path}")


if __name__ == "__main__":
    main()
