"""World Models' temperature experiment: evolve C in dreams of different τ on one trained V + M.

For each τ a fresh controller (the run's ``behavior`` settings, the same seed) is evolved for
``generations`` CMA-ES generations in the checkpoint's MDN-RNN dreaming at τ, from posterior
states of the run's own replayed episodes; then its dream return (at τ, on a fixed set of held
start states) and its real return on the simulator are measured. The original's finding: a dream
at τ > 1 is harder to exploit, so its controllers transfer better (Ha & Schmidhuber 2018, Table 2).
Rewards per step are reported beside the returns, since a dream lasts ``horizon`` steps and a
real episode the task's time limit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch

import wm_robotics.envs as envs
from wm_robotics.agent import Agent, agent_from_checkpoint
from wm_robotics.behaviors.cmaes_controller import dream_returns
from wm_robotics.builders import build_behavior, resolve_device
from wm_robotics.checkpoint import checkpoint_file, load_checkpoint
from wm_robotics.data.replay import SequenceReplay, to_torch
from wm_robotics.evaluation import evaluate_returns
from wm_robotics.models.base import State


def replay_starts(agent: Agent, episodes_dir: Path, count: int, seq_len: int, seed: int) -> State:
    """Posterior states (count·seq_len, ...) of ``count`` sequences sampled from the run's episode files."""
    replay = SequenceReplay.from_directory(episodes_dir, seq_len=seq_len, batch_size=count, seed=seed)
    if not replay.can_sample:
        raise ValueError(f"{episodes_dir} holds no episode of at least {seq_len} observations")
    batch = to_torch(replay.sample(), agent.device)
    model = agent.model
    obs = {key: batch[f"obs/{key}"] for key in model.obs_keys}
    with torch.no_grad():
        post, _ = model.observe(obs, agent.behavior.from_env(batch["action"]), batch["is_first"])
    return {key: value.flatten(0, 1) for key, value in post.items()}


def temperature_sweep(checkpoint: str | os.PathLike, temperatures: Sequence[float] = (0.5, 1.0, 1.5),
                      generations: int = 100, episodes: int = 5, held_starts: int = 256, seed: int = 0,
                      device: str = "auto") -> dict[str, Any]:
    """Evolve and evaluate one controller per τ; a JSON-ready dict (``rows``: one per τ)."""
    checks = (("temperatures", list(temperatures), bool(temperatures) and all(t >= 0 for t in temperatures)),
              ("generations", generations, generations >= 1), ("episodes", episodes, episodes >= 1),
              ("held_starts", held_starts, held_starts >= 1))
    wrong = {name: value for name, value, good in checks if not good}  # a NaN temperature fails t >= 0
    if wrong:
        raise ValueError(f"need temperatures >= 0 (at least one), generations, episodes and held_starts >= 1; "
                         f"got {wrong}")
    torch_device = resolve_device(device)
    payload = load_checkpoint(checkpoint, map_location=torch_device)
    cfg = payload["config"]
    if cfg["behavior"]["kind"] != "cmaes":
        raise ValueError(f"{checkpoint} has behavior {cfg['behavior']['kind']!r}; the τ sweep evolves the CMA-ES "
                         f"controller of a world_models run (behavior=cmaes)")
    agent = agent_from_checkpoint(payload, torch_device)
    model = agent.model
    if not hasattr(model, "temperature"):
        raise ValueError(f"{checkpoint} holds a {cfg['model']['kind']} model, which has no sampling temperature")
    trained_temperature = model.temperature
    env = envs.make_env(cfg["env"]["id"], render_mode="rgb_array", **envs.env_kwargs(cfg))
    torch.manual_seed(seed)
    episodes_dir = checkpoint_file(checkpoint).parent.parent / "episodes"  # <run>/checkpoints/latest.pt
    starts = replay_starts(agent, episodes_dir, count=32, seq_len=cfg["seq_len"], seed=seed)
    held = replay_starts(agent, episodes_dir, count=max(1, held_starts // cfg["seq_len"]), seq_len=cfg["seq_len"],
                         seed=seed + 1)
    rows = []
    try:
        for tau in temperatures:
            clock = time.perf_counter()
            torch.manual_seed(seed)
            model.temperature = tau
            controller = build_behavior({**cfg["behavior"], "seed": seed}, model,
                                        gym.spaces.Box(np.asarray(payload["action_low"], np.float32),
                                                       np.asarray(payload["action_high"], np.float32))).to(torch_device)
            metrics = controller.evolve(model, starts, generations)
            torch.manual_seed(seed)
            dream = dream_returns(model, held, controller.weight[None], controller.bias[None], controller.horizon,
                                  controller.discount)[0]
            real = evaluate_returns(Agent(model, controller, torch_device), env, episodes, seed=100_000 + seed)
            steps = float(np.mean(real.lengths))
            rows.append({"temperature": tau, "dream_return": float(dream.mean()),
                         "dream_return_std": float(dream.std()),
                         "dream_reward_per_step": float(dream.mean()) / controller.horizon,
                         "real_return": real.mean, "real_return_std": real.std, "real_returns": real.returns,
                         "real_reward_per_step": real.mean / steps, "final_sigma": metrics["cmaes/sigma"],
                         "seconds": time.perf_counter() - clock})
    finally:
        env.close()
    model.temperature = trained_temperature
    return {"checkpoint": str(Path(checkpoint).resolve()), "env": cfg["env"]["id"], "obs_mode": cfg["obs_mode"],
            "env_steps": payload["counters"]["env_steps"], "trained_temperature": trained_temperature,
            "generations": generations, "population": controller.population, "rollouts": controller.rollouts,
            "horizon": controller.horizon, "held_starts": int(held["h"].shape[0]), "episodes": episodes,
            "seed": seed, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The sweep as a markdown table."""
    lines = [f"τ sweep on {result['env']} ({result['obs_mode']}), V + M of {result['env_steps']:,} env steps; "
             f"{result['generations']} generations × {result['population']} candidates × {result['rollouts']} dreams "
             f"of {result['horizon']} steps; dream return on {result['held_starts']} held start states, real return "
             f"over {result['episodes']} episodes", "",
             "| τ | dream return | dream reward / step | real return | real reward / step |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['temperature']:g} | {row['dream_return']:.1f} ± {row['dream_return_std']:.1f} | "
                     f"{row['dream_reward_per_step']:.3f} | {row['real_return']:.1f} ± {row['real_return_std']:.1f} | "
                     f"{row['real_reward_per_step']:.3f} |")
    return "\n".join(lines) + "\n"
