"""Measuring a world model against real data: open-loop error vs horizon, action sensitivity,
latent collapse diagnostics and planner timing.

Held-out episodes come in the episode-file format (``obs/<key>`` T+1 entries, ``action`` and
``reward`` T, env action units) and are cut into *windows* of ``context + horizon`` observations,
aligned in the Dreamer convention (``action[t]`` led to obs t, zero at the episode start). The
model filters a window with ``observe``; from the posterior at the last context step it
``imagine``s ``horizon`` steps under the window's own actions. Entry h-1 of every per-horizon
list is measured h steps after the last observed step. Everything is batched over windows;
loops run over time only. Actions are normalised to the model's [-1, 1] units with the env
bounds ``action_low``/``action_high`` (the inverse of ``behavior.to_env``).

Imaginations that are compared with each other (action sensitivity) are drawn with the same
torch seed, so a stochastic model's samples share their noise and only the actions differ.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from wm_robotics.behaviors.action_bounds import from_env_units
from wm_robotics.models.base import State, WorldModel

Episode = dict[str, np.ndarray]
#: Per-dimension variances below this floor (raw units²) are raised to it before dividing.
VARIANCE_FLOOR = 1e-6


def check_windows(context: int, horizon: int, per_episode: int) -> None:
    """ValueError unless open-loop windows have at least 1 real step of context, 1 imagined step and 1 window
    per episode (with context 0 the start state would be the window's last, future, observation)."""
    for name, value in (("context", context), ("horizon", horizon), ("windows_per_episode", per_episode)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def windows(episodes: Sequence[Episode], length: int, per_episode: int
            ) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
    """Up to ``per_episode`` non-overlapping windows of ``length`` aligned steps from each episode.

    Returns (arrays (W, length, ...): ``obs/<key>``, ``action``, ``reward``, ``is_first``;
    [(episode index, start index t0)] per window).
    """
    for name, value in (("length", length), ("windows per episode", per_episode)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    batch: dict[str, list[np.ndarray]] = {}
    index = []
    for i, episode in enumerate(episodes):
        steps = len(episode["action"])
        aligned = {key: value for key, value in episode.items() if key.startswith("obs/")}
        aligned["action"] = np.concatenate([np.zeros_like(episode["action"][:1]), episode["action"]]).astype(np.float32)
        aligned["reward"] = np.concatenate([[0.0], episode["reward"]]).astype(np.float32)
        aligned["is_first"] = np.arange(steps + 1) == 0
        for t0 in range(0, steps + 2 - length, length)[:per_episode]:
            index.append((i, t0))
            for key, value in aligned.items():
                batch.setdefault(key, []).append(value[t0:t0 + length])
    if not index:
        longest = max((len(e["action"]) + 1 for e in episodes), default=0)
        raise ValueError(f"no episode has the {length} observations a window needs; "
                         f"the longest has {longest}")
    return {key: np.stack(values) for key, values in batch.items()}, index


def variance(episodes: Sequence[Episode], key: str) -> np.ndarray:
    """Data variance of ``obs/<key>``: per dimension for proprio (D,), one scalar for pixels (in [0, 1] units)."""
    count, total, squares = 0, 0.0, 0.0
    for episode in episodes:  # one episode at a time: pixels as float64 would not fit in memory at once
        x = np.asarray(episode[f"obs/{key}"], np.float64)
        x = x.reshape(-1) / 255.0 if key == "pixels" else x.reshape(len(x), -1)
        count, total, squares = count + len(x), total + x.sum(0), squares + np.square(x).sum(0)
    return np.maximum(squares / count - np.square(total / count), VARIANCE_FLOOR)


def _device(model: WorldModel) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    tensor = next(iter(model.buffers()), None) if tensor is None else tensor
    return torch.device("cpu") if tensor is None else tensor.device


def _normalise(action: np.ndarray, low: Any, high: Any) -> np.ndarray:
    """Env units → the model's [-1, 1]."""
    return from_env_units(action, np.asarray(low, np.float32), np.asarray(high, np.float32))


def _obs(batch: dict[str, np.ndarray], key: str, device: torch.device) -> torch.Tensor:
    """Observations as the model compares them: pixels float in [0, 1], proprio float32."""
    value = torch.as_tensor(batch[f"obs/{key}"], device=device)
    return value.float() / 255.0 if key == "pixels" else value.float()


@torch.no_grad()
def _filter(model: WorldModel, batch: dict[str, np.ndarray], low: Any, high: Any, seed: int = 0
            ) -> tuple[State, torch.Tensor]:
    """(posterior states (W, L, ...), normalised actions (W, L, A)) of the windows, torch seeded with ``seed``."""
    device = _device(model)
    obs = {key: torch.as_tensor(batch[f"obs/{key}"], device=device) for key in model.obs_keys}
    actions = torch.as_tensor(_normalise(batch["action"], low, high), device=device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        post, _ = model.observe(obs, actions, torch.as_tensor(batch["is_first"], device=device))
    return post, actions


@torch.no_grad()
def _imagine(model: WorldModel, start: State, actions: torch.Tensor, seed: int) -> State:
    """``model.imagine`` under ``actions`` (W, H, A) with torch's RNG seeded (restored afterwards)."""
    device = _device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.imagine(start, actions.shape[1], actions=actions)[0]


def _spread(features: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance of features (..., F) to their mean: the scale latent distances are divided by."""
    flat = features.reshape(-1, features.shape[-1])
    return (flat - flat.mean(0)).norm(dim=-1).mean().clamp_min(1e-8)


def _per_horizon(error: torch.Tensor) -> list[float]:
    """(W, H, ...) → mean over windows and trailing dims per horizon, as a list of H floats."""
    return error.reshape(*error.shape[:2], -1).mean((0, 2)).tolist()


def _squared(a: torch.Tensor, b: torch.Tensor, var: np.ndarray | None = None) -> torch.Tensor:
    """(a - b)², divided by ``var`` (broadcast over the last dim) when given."""
    error = (a - b).square()
    return error if var is None else error / torch.as_tensor(var, dtype=error.dtype, device=error.device)


def _errors(model: WorldModel, states: State, future: dict[str, np.ndarray], scales: dict[str, np.ndarray]
            ) -> dict[str, torch.Tensor]:
    """Squared (and absolute reward) errors (W, H, ...) of what ``states`` decode / predict vs the real ``future``."""
    feat = model.features(states)
    out = {}
    for key, value in model.decode(states).items():
        if key in scales:
            real = _obs(future, key, feat.device)
            out[f"{'pixel' if key == 'pixels' else key}_mse"] = _squared(value, real)
            if key == "proprio":
                out["proprio_nmse"] = _squared(value, real, scales[key])
    reward = model.predict_reward(feat)
    if reward is not None:
        error = reward - torch.as_tensor(future["reward"], device=feat.device)
        out["reward_mse"], out["reward_mae"] = error.square(), error.abs()
    return out


def _anchored_windows(model: WorldModel, episodes: Sequence[Episode], context: int, horizon: int, action_low: Any,
                      action_high: Any, per_episode: int, seed: int) -> tuple:
    """The episodes' windows of ``context + horizon`` steps filtered by the model: (batch, index, posterior,
    normalised actions, the start state of imagination: the posterior at the last context step)."""
    check_windows(context, horizon, per_episode)
    batch, index = windows(episodes, context + horizon, per_episode)
    post, actions = _filter(model, batch, action_low, action_high, seed)
    return batch, index, post, actions, {key: value[:, context - 1] for key, value in post.items()}


@torch.no_grad()
def open_loop_errors(model: WorldModel, episodes: Sequence[Episode], context: int, horizon: int,
                     action_low: Any = -1.0, action_high: Any = 1.0, per_episode: int = 10, seed: int = 0) -> dict:
    """Open-loop prediction error per horizon 1..H under the real actions.

    Keys: ``horizons``, ``windows``, ``context``; ``latent_l2`` (L2 between imagined features and
    the posterior's on the real future) and ``latent_l2_relative`` (÷ the posterior features' mean
    distance to their mean) always; ``proprio_mse`` (raw units²) and ``proprio_nmse`` (each dim
    ÷ its data variance) when the model decodes proprio; ``pixel_mse`` ([0, 1] units) when it
    decodes pixels; ``reward_mse`` and ``reward_mae`` when it has a reward head.
    ``reconstruction``: the same errors (scalars) from the posterior filtered on the real future,
    the floor the open-loop errors start from; its ``latent_l2`` is the distance between two
    posterior samples of the same data (0 for a deterministic model).
    """
    batch, index, post, actions, start = _anchored_windows(model, episodes, context, horizon, action_low, action_high,
                                                           per_episode, seed)
    imagined = _imagine(model, start, actions[:, context:], seed)  # (W, H, ...)
    filtered = {key: value[:, context:] for key, value in post.items()}  # (W, H, ...)
    resampled = _filter(model, batch, action_low, action_high, seed + 1)[0]  # a second posterior sample
    resampled = {key: value[:, context:] for key, value in resampled.items()}
    future = {key: value[:, context:] for key, value in batch.items()}
    feat, real_feat = model.features(imagined), model.features(filtered)  # (W, H, F)
    latent, floor = (feat - real_feat).norm(dim=-1), (model.features(resampled) - real_feat).norm(dim=-1)
    spread = _spread(real_feat)
    scales = {key: variance(episodes, key) for key in ("proprio", "pixels") if f"obs/{key}" in batch}
    recon = {key: float(value.mean()) for key, value in _errors(model, filtered, future, scales).items()}
    return {"horizons": list(range(1, horizon + 1)), "windows": len(index), "context": context,
            "latent_l2": _per_horizon(latent), "latent_l2_relative": _per_horizon(latent / spread),
            **{key: _per_horizon(value) for key, value in _errors(model, imagined, future, scales).items()},
            "reconstruction": {"latent_l2": float(floor.mean()), "latent_l2_relative": float(floor.mean() / spread),
                               **recon}}


def replay_branch(env: gym.Env, episode: Episode, seed: int, branch: int, actions: np.ndarray,
                  keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Reset ``env`` with ``seed``, replay the episode's first ``branch`` actions, then take ``actions`` (H, A).

    Returns the observations ``keys`` (H, ...) that follow ``actions`` (``pixels`` from
    ``env.render()`` when the env's observations lack them). Raises ValueError when the replay
    does not reproduce the recorded proprio at ``branch`` (wrong seed or env settings).
    """
    obs, _ = env.reset(seed=seed)
    for action in episode["action"][:branch]:
        obs, *_ = env.step(action)
    recorded = episode.get("obs/proprio")
    if "proprio" in obs and recorded is not None and not np.allclose(obs["proprio"], recorded[branch], atol=1e-4):
        raise ValueError(f"the episode does not replay from reset(seed={seed}): proprio at step {branch} differs "
                         f"({obs['proprio']} vs recorded {recorded[branch]}); "
                         "record it with this seed and the same env settings")
    frames: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    for action in actions:
        obs, _, terminated, truncated, _ = env.step(action)
        for key in keys:
            frames[key].append(obs[key] if key in obs else env.render())
        if terminated or truncated:
            break
    return {key: np.stack(values + values[-1:] * (len(actions) - len(values))) for key, values in frames.items()}


@torch.no_grad()
def action_sensitivity(model: WorldModel, episodes: Sequence[Episode], context: int, horizon: int,
                       action_low: Any = -1.0, action_high: Any = 1.0, env: gym.Env | None = None,
                       seeds: Sequence[int] | None = None, per_episode: int = 10, seed: int = 0) -> dict:
    """How much imagined futures change when the real actions are replaced by uniform random ones.

    Per horizon: ``model.features`` = L2 between the two imagined feature trajectories ÷ the
    posterior features' spread; ``model.<key>`` for each decoded observation = squared
    difference ÷ the data variance (per dim for proprio), averaged over dims. With ``env`` and
    the episodes' reset ``seeds``, ``real.<key>`` is the same quantity for the simulator
    (recorded future vs :func:`replay_branch` under the same random actions). ``model_mean``,
    ``real_mean`` average over horizons; ``ratio.<key>`` = model_mean / real_mean (~1 for an
    exact model, ~0 for a model that ignores its actions). Without a decoder only ``model.features``.
    """
    if (env is None) != (seeds is None) or (seeds is not None and len(seeds) != len(episodes)):
        given = "no seeds" if seeds is None else f"{len(seeds)} seeds"
        raise ValueError(f"the simulator comparison needs env and one reset seed per episode: got "
                         f"{'an env' if env is not None else 'no env'}, {given} for {len(episodes)} episodes")
    batch, index, post, actions, start = _anchored_windows(model, episodes, context, horizon, action_low, action_high,
                                                           per_episode, seed)
    low = np.broadcast_to(np.asarray(action_low, np.float32), actions.shape[-1:])
    high = np.broadcast_to(np.asarray(action_high, np.float32), actions.shape[-1:])
    random = np.random.default_rng(seed).uniform(low, high, (len(index), horizon, len(low))).astype(np.float32)
    random_norm = torch.as_tensor(_normalise(random, low, high), device=actions.device)
    real_img = _imagine(model, start, actions[:, context:], seed)
    random_img = _imagine(model, start, random_norm, seed)
    real_feat = model.features({key: value[:, context:] for key, value in post.items()})
    feat_a, feat_b = model.features(real_img), model.features(random_img)
    model_out = {"features": _per_horizon((feat_a - feat_b).norm(dim=-1) / _spread(real_feat))}
    decoded_a, decoded_b = model.decode(real_img), model.decode(random_img)
    scales = {key: variance(episodes, key) for key in decoded_a if f"obs/{key}" in batch}
    for key, scale in scales.items():
        model_out[key] = _per_horizon(_squared(decoded_a[key], decoded_b[key], scale))
    out = {"perturbation": "uniform random actions within the bounds", "windows": len(index), "context": context,
           "horizons": list(range(1, horizon + 1)), "model": model_out,
           "model_mean": {key: float(np.mean(v)) for key, v in model_out.items()}}
    if env is not None and seeds is not None and scales:
        branches = [replay_branch(env, episodes[i], seeds[i], t0 + context - 1, random[w], list(scales))
                    for w, (i, t0) in enumerate(index)]
        future = {key: value[:, context:] for key, value in batch.items()}
        real_out = {}
        for key, scale in scales.items():
            replayed = _obs({f"obs/{key}": np.stack([b[key] for b in branches])}, key, feat_a.device)
            real_out[key] = _per_horizon(_squared(_obs(future, key, feat_a.device), replayed, scale))
        out["real"] = real_out
        out["real_mean"] = {key: float(np.mean(v)) for key, v in real_out.items()}
        out["ratio"] = {key: out["model_mean"][key] / max(out["real_mean"][key], 1e-12) for key in real_out}
    return out


@torch.no_grad()
def posterior_features(model: WorldModel, episodes: Sequence[Episode], length: int, action_low: Any = -1.0,
                       action_high: Any = 1.0, per_episode: int = 10, seed: int = 0) -> torch.Tensor:
    """Posterior features (W·length, F) of the episodes' windows, for :func:`latent_diagnostics`."""
    post, _ = _filter(model, windows(episodes, length, per_episode)[0], action_low, action_high, seed)
    features = model.features(post)
    return features.reshape(-1, features.shape[-1])


def latent_diagnostics(features: torch.Tensor, min_rank: float = 2.0, min_std: float = 1e-3) -> dict:
    """Collapse diagnostics of embeddings (..., F).

    ``std_mean``/``std_min``: per-dimension std over samples; ``dead_fraction``: share of dims
    with std < ``min_std``; ``effective_rank``: RankMe (Garrido et al., 2023), exp of the entropy
    of the singular values (uncentered, L1-normalised), between 1 and min(N, F); ``collapsed``:
    effective rank < ``min_rank`` or mean std < ``min_std`` (a constant embedding has rank 1, std 0).
    """
    x = features.detach().reshape(-1, features.shape[-1]).double()
    std = x.std(0) if len(x) > 1 else torch.zeros(x.shape[-1], dtype=x.dtype)
    singular = torch.linalg.svdvals(x)
    p = singular / singular.sum().clamp_min(1e-12)
    rank = float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))
    std_mean = float(std.mean())
    return {"samples": len(x), "feature_dim": x.shape[-1], "std_mean": std_mean, "std_min": float(std.min()),
            "dead_fraction": float((std < min_std).double().mean()), "effective_rank": rank,
            "collapsed": bool(rank < min_rank or std_mean < min_std),
            "thresholds": {"min_rank": min_rank, "min_std": min_std}}


@torch.no_grad()
def latent_health(model: WorldModel, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """:func:`latent_diagnostics` of the features ``model.observe`` gives for a replay ``batch`` (actions in
    the model's units), as ``latent/*`` metrics; a collapsed latent is also reported on the console."""
    post, _ = model.observe({key: batch[f"obs/{key}"] for key in model.obs_keys}, batch["action"], batch["is_first"])
    diag = latent_diagnostics(model.features(post))
    if diag["collapsed"]:
        print(f"WARNING: the latent has collapsed: effective rank {diag['effective_rank']:.2f} of "
              f"{diag['feature_dim']}, mean per-dim std {diag['std_mean']:.2e} (thresholds {diag['thresholds']})")
    names = ("std_mean", "std_min", "dead_fraction", "effective_rank", "collapsed")
    return {f"latent/{name}": float(diag[name]) for name in names}


def planner_timing(controller: Any, observations: Sequence[dict[str, np.ndarray]], warmup: int = 2) -> dict:
    """Milliseconds per ``controller.act`` (an ``MPCController``) over consecutive observations of one episode."""
    if len(observations) <= warmup:
        raise ValueError(f"need more than warmup={warmup} observations to time, got {len(observations)}")
    controller.reset()
    for obs in observations[:warmup]:
        controller.act(obs)
    start = time.perf_counter()
    for obs in observations[warmup:]:
        controller.act(obs)
    timed = len(observations) - warmup
    return {"planner": controller.planner_name, "ms_per_action": 1000 * (time.perf_counter() - start) / timed,
            "actions_timed": timed}


def set_goal_from_info(controller: Any, info: dict[str, Any]) -> bool:
    """Give ``controller`` the goal of a goal task's ``info`` (``goal_<key>`` for each key it reads);
    False, and nothing set, when ``info`` is not from a goal task (no ``success``)."""
    if "success" not in info:
        return False
    controller.set_goal({key: info[f"goal_{key}"] for key in controller.goal_keys})
    return True


def goal_reaching(controller: Any, env: gym.Env, episodes: int, seed: int, max_steps: int | None = None,
                  progress: bool = True) -> dict[str, Any] | None:
    """Plan toward ``info["goal_<key>"]`` for ``episodes`` episodes (seeds ``seed``…); None on non-goal envs.

    An episode ends after ``max_steps`` agent steps (None: the env's own end) and succeeds when its
    last ``info["success"]`` is true (end effector within the task's target radius). Returns
    ``success_rate``, ``goal_episodes``, ``goal_steps`` and the per-episode ``start_distance`` /
    ``final_distance`` (metres) with their means.
    """
    successes, start, final = [], [], []
    bar = tqdm(range(episodes), desc="goal episodes", unit="ep", disable=not progress)
    for index in bar:
        obs, info = env.reset(seed=seed + index)
        controller.reset()
        if not set_goal_from_info(controller, info):
            return None
        start.append(float(info["goal_distance"]))
        done, steps = False, 0
        while not done and (max_steps is None or steps < max_steps):
            obs, _, terminated, truncated, info = env.step(controller.act(obs))
            done, steps = terminated or truncated, steps + 1
        successes.append(bool(info["success"]))
        final.append(float(info["goal_distance"]))
        bar.set_postfix(success=f"{np.mean(successes):.2f}")
    return {"success_rate": float(np.mean(successes)), "goal_episodes": episodes, "goal_steps": max_steps,
            "start_distance": start, "final_distance": final, "start_distance_mean": float(np.mean(start)),
            "final_distance_mean": float(np.mean(final))}
