"""Evaluate an agent on the simulator: returns over episodes, optionally the frames of one."""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from wm_robotics.agent import Agent


@dataclass
class ReturnReport:
    """Episode returns of an evaluation (``frames`` of the first episode when recorded)."""

    returns: list[float]
    lengths: list[int]
    frames: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    def summary(self) -> dict[str, float | list[float]]:
        """JSON-ready: mean, std, min, max, episodes and each return."""
        return {"return_mean": self.mean, "return_std": self.std, "return_min": float(np.min(self.returns)),
                "return_max": float(np.max(self.returns)), "episodes": len(self.returns), "returns": self.returns}


def evaluate_returns(agent: Agent, env: gym.Env, episodes: int, seed: int = 0, record_first: bool = False,
                     sample: bool = False) -> ReturnReport:
    """Run ``episodes`` episodes (seeds ``seed``…) with the agent's deterministic policy by default.

    With ``record_first`` the first episode's frames come from ``env.render()`` (the env must
    have ``render_mode="rgb_array"``).
    """
    report = ReturnReport([], [])
    for index in range(episodes):
        obs, _ = env.reset(seed=seed + index)
        agent.reset(1)
        is_first, done, total, length = True, False, 0.0, 0
        record = record_first and index == 0
        if record:
            report.frames.append(env.render())
        while not done:
            batch = {key: value[None] for key, value in obs.items()}
            action = agent.act(batch, np.array([is_first]), sample=sample)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total, length, is_first, done = total + float(reward), length + 1, False, terminated or truncated
            if record:
                report.frames.append(env.render())
        report.returns.append(total)
        report.lengths.append(length)
    return report
