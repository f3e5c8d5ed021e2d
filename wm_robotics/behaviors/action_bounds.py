"""Action units for behaviours: normalised [-1, 1] inside the learner, [low, high] in the simulator."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

Bounds = float | Sequence[float] | np.ndarray | torch.Tensor


class ActionBounds(nn.Module):
    """Holds the env's action bounds as buffers and maps between env and normalised units.

    A behaviour that subclasses it provides ``to_env`` / ``from_env``, as the Agent, the Trainer and
    the evaluation tools expect of every behaviour.
    """

    def __init__(self, action_dim: int, action_low: Bounds = -1.0, action_high: Bounds = 1.0) -> None:
        super().__init__()
        low = torch.as_tensor(np.asarray(action_low, dtype=np.float32)).expand(action_dim).clone()
        high = torch.as_tensor(np.asarray(action_high, dtype=np.float32)).expand(action_dim).clone()
        if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (low < high).all()):
            raise ValueError(f"action bounds must be finite with low < high, got {low.tolist()}, {high.tolist()}")
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """Normalised [-1, 1] → env units [low, high]."""
        return self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)

    def from_env(self, action: torch.Tensor) -> torch.Tensor:
        """Env units [low, high] → normalised [-1, 1] (inverse of :meth:`to_env`)."""
        return 2.0 * (action - self.action_low) / (self.action_high - self.action_low) - 1.0
