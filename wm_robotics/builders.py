"""Build world models and behaviours by name from a config (one registry each)."""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from wm_robotics.models.base import WorldModel


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device=auto or device=cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def obs_shapes(space: gym.spaces.Dict) -> dict[str, tuple[int, ...]]:
    """``{"pixels": (H, W, 3), "proprio": (D,)}`` for the keys an env observation has."""
    return {key: tuple(sub.shape) for key, sub in space.spaces.items()}


def _rssm(model_cfg: dict[str, Any], shapes: dict[str, tuple], action_dim: int) -> WorldModel:
    from wm_robotics.models.rssm import RSSMWorldModel

    return RSSMWorldModel.from_size(model_cfg["size"], shapes, action_dim, **model_cfg.get("overrides", {}))


def _vmc(model_cfg: dict[str, Any], shapes: dict[str, tuple], action_dim: int) -> WorldModel:
    from wm_robotics.models.vmc import VMCWorldModel

    return VMCWorldModel.from_size(model_cfg["size"], shapes, action_dim, **model_cfg.get("overrides", {}))


def _jepa(model_cfg: dict[str, Any], shapes: dict[str, tuple], action_dim: int) -> WorldModel:
    from wm_robotics.models.jepa import JEPAWorldModel

    return JEPAWorldModel.from_size(model_cfg["size"], shapes, action_dim, **model_cfg.get("overrides", {}))


MODELS: dict[str, Callable[..., WorldModel]] = {"rssm": _rssm, "vmc": _vmc, "jepa": _jepa}


def build_world_model(model_cfg: dict[str, Any], shapes: dict[str, tuple], action_dim: int) -> WorldModel:
    """The world model named by ``model_cfg["kind"]`` (valid kinds: keys of ``MODELS``)."""
    kind = model_cfg.get("kind")
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {sorted(MODELS)}")
    return MODELS[kind](model_cfg, shapes, action_dim)


def _actor_critic(behavior_cfg: dict[str, Any], model: WorldModel, low: np.ndarray, high: np.ndarray):
    from wm_robotics.behaviors.actor_critic import ActorCritic

    params = {k: v for k, v in behavior_cfg.items() if k != "kind"}
    return ActorCritic(model.feature_dim, model.action_dim, low, high, **params)


def _cmaes(behavior_cfg: dict[str, Any], model: WorldModel, low: np.ndarray, high: np.ndarray):
    from wm_robotics.behaviors.cmaes_controller import CMAESController

    params = {k: v for k, v in behavior_cfg.items() if k != "kind"}
    return CMAESController(model.feature_dim, model.action_dim, low, high, **params)


def _mpc(behavior_cfg: dict[str, Any], model: WorldModel, low: np.ndarray, high: np.ndarray):
    from wm_robotics.behaviors.mpc_behavior import MPCBehavior

    # goal_energy is read at deployment (MPCController.set_goal), not by the training behaviour
    return MPCBehavior(model, low, high, **{k: v for k, v in behavior_cfg.items() if k not in ("kind", "goal_energy")})


BEHAVIORS: dict[str, Callable[..., torch.nn.Module]] = {"actor_critic": _actor_critic, "cmaes": _cmaes, "mpc": _mpc}


def build_behavior(behavior_cfg: dict[str, Any], model: WorldModel, action_space: gym.spaces.Box) -> torch.nn.Module:
    """The behaviour named by ``behavior_cfg["kind"]`` (valid kinds: keys of ``BEHAVIORS``)."""
    kind = behavior_cfg.get("kind")
    if kind not in BEHAVIORS:
        raise ValueError(f"unknown behavior kind {kind!r}; valid kinds: {sorted(BEHAVIORS)}")
    return BEHAVIORS[kind](behavior_cfg, model, action_space.low, action_space.high)
