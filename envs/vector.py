"""Parallel environments: one process per env so CPU physics and rendering run in parallel."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from wm_robotics.checks import positive_int
from wm_robotics.envs.registry import check_env_id


def _check_max_episode_steps(kwargs: dict[str, Any]) -> None:
    """Refuse a ``max_episode_steps`` that is not a positive integer; a NumPy one becomes the int Gymnasium wants."""
    if kwargs.get("max_episode_steps") is not None:
        kwargs["max_episode_steps"] = positive_int("max_episode_steps", kwargs["max_episode_steps"],
                                                   " (agent steps) or None")


def make_env(name: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for our ids, with a clear error that lists close ids."""
    _check_max_episode_steps(kwargs)
    return gym.make(check_env_id(name), **kwargs)


def env_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for :func:`make_env` from a run config (``configs/train.yaml``: ``obs_mode``, ``env.*``,
    ``max_episode_steps``)."""
    env = cfg["env"]
    kwargs = {"obs_mode": cfg["obs_mode"], "action_repeat": env["action_repeat"], "image_size": env["image_size"],
              "camera_id": env["camera_id"], "render_fast": env["render_fast"]}
    if cfg.get("max_episode_steps") is not None:  # 0 reaches make_env's check and is refused there
        kwargs["max_episode_steps"] = cfg["max_episode_steps"]
    return kwargs


def _worker_env(full_id: str, parent: int, **kwargs: Any) -> gym.Env:
    """Build one worker's env; Mesa's llvmpipe renders on one thread per worker process.

    llvmpipe spreads each frame over every core by default, so N worker processes would each
    fight for all cores; one render thread per process scales with the number of processes.
    An ``LP_NUM_THREADS`` the user set is kept, and the ``parent`` process (pid), which builds one env to read
    the spaces, keeps rendering on every core.
    """
    if os.getpid() != parent:
        os.environ.setdefault("LP_NUM_THREADS", "1")
    return gym.make(f"wm_robotics.envs:{full_id}", **kwargs)


def make_vector_env(
    name: str,
    num_envs: int,
    context: str = "spawn",
    asynchronous: bool | None = None,
    autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.NEXT_STEP,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """``AsyncVectorEnv`` of ``num_envs`` processes (``SyncVectorEnv`` for one env).

    ``asynchronous`` forces one or the other; by default only ``num_envs > 1`` is async.
    ``autoreset_mode=SAME_STEP`` returns the next episode's first observation at once and
    the final one in ``info["final_obs"]`` (what the training loop uses).

    Workers start with ``spawn`` by default: a forked child would inherit the parent's
    OpenGL context and torch threads, which is unsafe once the parent has rendered.

    By default autoreset follows Gymnasium's ``NEXT_STEP`` mode: after a step that ends an
    episode, the next ``step`` call resets that sub-env (its action is ignored) and returns
    the first observation of the new episode with reward 0.
    """
    num_envs = positive_int("num_envs", num_envs)
    _check_max_episode_steps(kwargs)
    full = check_env_id(name)
    if not (num_envs > 1 if asynchronous is None else asynchronous):
        fns = [partial(gym.make, f"wm_robotics.envs:{full}", **kwargs) for _ in range(num_envs)]
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=autoreset_mode)
    fns = [partial(_worker_env, full, os.getpid(), **kwargs) for _ in range(num_envs)]
    return gym.vector.AsyncVectorEnv(fns, context=context, autoreset_mode=autoreset_mode)


def control_steps_taken(info: dict[str, Any], done: np.ndarray) -> np.ndarray:
    """Control steps each sub-env applied in a ``SAME_STEP`` vector step: an env whose episode ended reports them in
    ``info["final_info"]`` (``info`` then holds its reset's)."""
    steps = np.asarray(info["control_steps"], np.int64)
    if done.any():
        steps = np.where(done, info["final_info"]["control_steps"], steps)
    return steps
