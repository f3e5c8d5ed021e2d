"""Tanh-Gaussian policy prior (TD-MPC2): seeds the planner's samples and bootstraps TD targets.

a = tanh(μ + σ·ε), ε ~ N(0, I), with log σ squashed into [log_std_min, log_std_max]; actions in
the model's normalised [-1, 1] units. ``log_prob`` is the density of the squashed action (the
Gaussian's, minus log|d tanh/du|).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wm_robotics.models.nets import mlp


class TanhGaussianPolicy(nn.Module):
    """features (..., F) → actions (..., A) in [-1, 1] (sampled or the mean) and their log-probability."""

    def __init__(self, feature_dim: int, action_dim: int, units: int, layers: int, log_std_min: float = -10.0,
                 log_std_max: float = 2.0) -> None:
        super().__init__()
        self.net = mlp(feature_dim, units, layers, 2 * action_dim)
        self.log_std_min, self.log_std_range = log_std_min, log_std_max - log_std_min

    def forward(self, features: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions (..., A), log-probabilities (...)); ``sample=False`` gives tanh(μ) and its log-density."""
        mean, raw = self.net(features).chunk(2, -1)
        log_std = self.log_std_min + 0.5 * self.log_std_range * (torch.tanh(raw) + 1)
        eps = torch.randn_like(mean) if sample else torch.zeros_like(mean)
        action = torch.tanh(mean + eps * log_std.exp())
        gaussian = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return action, gaussian - torch.log1p(1e-6 - action.square()).sum(-1)
