"""Open-loop imagination of a recorded episode: what a world model predicts under the real actions.

The first ``context`` (k) real steps are filtered with ``observe``; from the posterior of step
k−1 the model imagines the next ``horizon`` steps under the recorded actions, then restarts
(re-anchors) from the real posterior of the last imagined step, and so on to the end of the episode
(``horizon=None``: one open-loop rollout to the end). All chunks are imagined in one batched
``imagine`` call. Per step t = 0..T of an episode of T steps the result holds the state shown
(the posterior for t < k, the imagined one after), its decoded observations and the prediction
errors against the real posteriors / observations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from wm_robotics.agent import Agent
from wm_robotics.evaluation import evaluate_returns
from wm_robotics.models.base import State, WorldModel


@dataclass
class Imagination:
    """Per-step arrays of one episode (T+1 entries: the reset step and one per action)."""

    reward: np.ndarray                 # (T+1,) real reward on arriving at t (0 at t = 0)
    pred_reward: np.ndarray | None     # (T+1,) reward head on the shown state; None without one
    horizon: np.ndarray                # (T+1,) steps since the last anchor; 0 = filtered context step
    latent_error: np.ndarray           # (T+1,) RMS over features of shown − real posterior (0 on context)
    pixels: np.ndarray | None          # (T+1, 64, 64, 3) uint8 decoded frames; None without a pixel decoder
    proprio_error: np.ndarray | None   # (T+1,) mean |decoded − observed proprio| (raw units)
    anchors: list[int]                 # steps whose real posterior starts an open-loop chunk
    posterior: State                   # real posteriors (T+1, ...), e.g. for planning from step t


def record_episode(agent: Agent, env: gym.Env, seed: int) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """One episode with the agent's deterministic policy: (episode-file dict, frames (T+1)).

    The frames are ``env.render()`` (``render_mode="rgb_array"``), or the observed ``pixels`` when the
    env observes them: the same image, rendered once.
    """
    report = evaluate_returns(agent, env, 1, seed, record_first=True, record_episodes=True)
    return report.episodes[0], report.frames


def decoded_frames(pixels: torch.Tensor) -> np.ndarray:
    """A decoder's ``pixels`` (..., H, W, C) in [0, 1] as uint8 frames (rounded to the nearest level)."""
    return (pixels * 255).round().to(torch.uint8).cpu().numpy()


def _check_episode(model: WorldModel, episode: dict[str, np.ndarray]) -> None:
    missing = [key for key in model.obs_keys if f"obs/{key}" not in episode]
    if missing:
        raise ValueError(f"the model reads observations {list(model.obs_keys)} but the episode has no "
                         f"{['obs/' + key for key in missing]} (keys: {sorted(episode)})")
    if episode["action"].shape[-1] != model.action_dim:
        raise ValueError(f"episode actions have {episode['action'].shape[-1]} dims, the model {model.action_dim}")


def _select(state: State, index: torch.Tensor | slice) -> State:
    return {key: value[index] for key, value in state.items()}


def check_imagination(context: int, horizon: int | None) -> None:
    """ValueError unless :func:`imagine_episode` can use ``context`` and ``horizon``."""
    if context < 1:
        raise ValueError(f"context must be at least 1 real step (the first anchor), got {context}")
    if horizon is not None and horizon < 1:
        raise ValueError(f"horizon must be a positive number of steps or None, got {horizon}")


@torch.inference_mode()
def imagine_episode(model: WorldModel, episode: dict[str, np.ndarray],
                    from_env: Callable[[torch.Tensor], torch.Tensor], context: int = 5,
                    horizon: int | None = 50) -> Imagination:
    """Filter ``context`` real steps, imagine the rest open loop in chunks of ``horizon`` (None: no re-anchoring).

    ``episode`` follows the episode-file format (env-unit actions); ``from_env`` maps them to the
    model's normalised actions (the behaviour's ``from_env``).
    """
    check_imagination(context, horizon)
    _check_episode(model, episode)
    device = next(model.parameters()).device
    steps = len(episode["action"])
    actions = torch.zeros(1, steps + 1, model.action_dim, device=device)  # action[t] led to obs t
    actions[0, 1:] = from_env(torch.as_tensor(episode["action"], dtype=torch.float32, device=device))
    is_first = torch.zeros(1, steps + 1, dtype=torch.bool, device=device)
    is_first[0, 0] = True
    obs = {key: torch.as_tensor(episode[f"obs/{key}"][None], device=device) for key in model.obs_keys}
    posterior, _ = model.observe(obs, actions, is_first)
    posterior = _select(posterior, 0)  # (T+1, ...)
    k = min(context, steps + 1)
    rest = steps + 1 - k  # imagined steps
    chunk = horizon or max(rest, 1)
    anchors = list(range(k - 1, steps, chunk))
    shown, horizons = _select(posterior, slice(0, k)), np.zeros(steps + 1, np.int64)
    if rest:
        start = torch.as_tensor(anchors, device=device)  # (C,)
        index = (start[:, None] + 1 + torch.arange(chunk, device=device)).clamp(max=steps)  # (C, H)
        imagined, _ = model.imagine(_select(posterior, start), chunk, actions=actions[0, index])  # (C, H, ...)
        imagined = {key: value.flatten(0, 1)[:rest] for key, value in imagined.items()}  # (T+1−k, ...)
        shown = {key: torch.cat([shown[key], imagined[key]]) for key in shown}
        horizons[k:] = np.arange(rest) % chunk + 1
    features, real_features = model.features(shown), model.features(posterior)  # (T+1, F)
    reward = model.predict_reward(features)
    decoded = model.decode(shown)
    pixels = proprio_error = None
    if "pixels" in decoded:
        pixels = decoded_frames(decoded["pixels"])
    if "proprio" in decoded and "obs/proprio" in episode:
        proprio_error = np.abs(decoded["proprio"].float().cpu().numpy() - episode["obs/proprio"]).mean(-1)
    return Imagination(
        reward=np.concatenate([[0.0], episode["reward"]]).astype(np.float32),
        pred_reward=None if reward is None else reward.float().cpu().numpy(),
        horizon=horizons,
        latent_error=(features - real_features).square().mean(-1).sqrt().float().cpu().numpy(),
        pixels=pixels, proprio_error=proprio_error, anchors=anchors,
        posterior=posterior)
