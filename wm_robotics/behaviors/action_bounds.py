"""Action units for behaviours: normalised [-1, 1] inside the learner, [low, high] in the simulator."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

Bounds = float | Sequence[float] | np.ndarray | torch.Tensor
Array = np.ndarray | torch.Tensor


def bound_vectors(action_dim: int, action_low: Bounds, action_high: Bounds) -> tuple[torch.Tensor, torch.Tensor]:
    """``action_low`` and ``action_high`` (a scalar or ``action_dim`` values each) as float32 vectors of
    ``action_dim``; finite, with low < high, or a ``ValueError`` naming the argument."""
    bounds = []
    for name, value in (("action_low", action_low), ("action_high", action_high)):
        tensor = torch.as_tensor(np.asarray(value, dtype=np.float32))
        if tensor.numel() not in (1, action_dim):
            raise ValueError(f"{name} must be a scalar or hold action_dim={action_dim} values, got shape "
                             f"{tuple(tensor.shape)}")
        bounds.append(tensor.reshape(-1).expand(action_dim).clone())
    low, high = bounds
    if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (low < high).all()):
        raise ValueError(f"action bounds must be finite with action_low < action_high, got {low.tolist()} and "
                         f"{high.tolist()}")
    return low, high


def to_env_units(action: Array, low: Array, high: Array) -> Array:
    """Normalised [-1, 1] → env units [low, high] (numpy or torch), clipped to them (rounding could put an
    action of 1 an ulp above ``high``)."""
    return (low + (action + 1.0) * 0.5 * (high - low)).clip(low, high)


def from_env_units(action: Array, low: Array, high: Array) -> Array:
    """Env units [low, high] → normalised [-1, 1] (numpy or torch; inverse of :func:`to_env_units`)."""
    return 2.0 * (action - low) / (high - low) - 1.0


class ActionBounds(nn.Module):
    """Holds the env's action bounds as buffers and maps between env and normalised units.

    A behaviour that subclasses it provides ``to_env`` / ``from_env``, as the Agent, the Trainer and
    the evaluation tools expect of every behaviour.
    """

    def __init__(self, action_dim: int, action_low: Bounds = -1.0, action_high: Bounds = 1.0) -> None:
        super().__init__()
        low, high = bound_vectors(action_dim, action_low, action_high)
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """Normalised [-1, 1] → env units [low, high]."""
        return to_env_units(action, self.action_low, self.action_high)

    def from_env(self, action: torch.Tensor) -> torch.Tensor:
        """Env units [low, high] → normalised [-1, 1] (inverse of :meth:`to_env`)."""
        return from_env_units(action, self.action_low, self.action_high)
