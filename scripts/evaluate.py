"""Evaluate a checkpoint on the simulator: mean ± std return over N episodes (JSON with out=).

    python scripts/evaluate.py checkpoint=runs/dreamer/<...>/checkpoints/latest.pt episodes=10 out=report.json
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

import wm_robotics.envs as envs
from wm_robotics.agent import agent_from_checkpoint
from wm_robotics.builders import resolve_device
from wm_robotics.checkpoint import load_checkpoint
from wm_robotics.evaluation import evaluate_returns
from wm_robotics.train import env_kwargs
from wm_robotics.video import annotate, upscale, write_video


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    device = resolve_device(cfg.device)
    payload = load_checkpoint(to_absolute_path(cfg.checkpoint), map_location=device)
    agent = agent_from_checkpoint(payload, device)
    run_cfg = payload["config"]
    env = envs.make_env(run_cfg["env"]["id"], render_mode="rgb_array", **env_kwargs(run_cfg))
    report = evaluate_returns(agent, env, cfg.episodes, seed=cfg.seed, record_first=cfg.video is not None,
                              sample=cfg.sample)
    summary = {"checkpoint": str(Path(to_absolute_path(cfg.checkpoint)).resolve()), "env": run_cfg["env"]["id"],
               "experiment": run_cfg["experiment_name"], "env_steps": payload["counters"]["env_steps"],
               **report.summary()}
    print(f"{summary['experiment']} on {summary['env']} after {summary['env_steps']:,} env steps: "
          f"return {report.mean:.1f} ± {report.std:.1f} over {cfg.episodes} episodes")
    if cfg.out:
        out = Path(to_absolute_path(cfg.out))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
        print(f"report -> {out}")
    if cfg.video:
        frames = [annotate(upscale(f, 256), [summary["env"], f"t={t}"]) for t, f in enumerate(report.frames)]
        print(f"video -> {write_video(to_absolute_path(cfg.video), frames)}")


if __name__ == "__main__":
    main()
