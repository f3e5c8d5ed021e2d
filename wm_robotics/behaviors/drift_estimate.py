"""Offset-free goal MPC: the model's one-step error in what a goal energy compares, measured online.

A learned model can be biased in a region of state space, e.g. predict a resting arm drifting toward the
middle of the joint range. A planner that trusts it then stops where the *predicted* path ends at the goal,
short of the goal itself (the reacher's misses in docs/results/jepa_goal.md, session 16). Offset-free MPC
estimates such a persistent error from what the model predicted for the step just taken and what the new
observation encodes to, and adds it back to the imagined path: ``h`` times the estimate at imagined step
``h`` (an integrating disturbance). At a goal the robot can hold, the corrected first step is exact, so
the goal is a fixed point of the loop whatever the model's bias there.
"""

from __future__ import annotations

import torch


class DriftEstimate:
    """Exponential average of the model's one-step errors in what the goal energy compares (decoded fields
    and/or latent dims), in ``shape`` (the goal's: (F,), or (E, F) for one goal per environment).

    ``weight`` in (0, 1] is the share of the newest error (1: the last error alone). ``drift`` is updated
    in place, so an objective holding it (``GoalObjective(drift=...)``) sees every update, also inside a
    captured CUDA graph.
    """

    def __init__(self, shape: tuple[int, ...] | torch.Size, weight: float, device: torch.device | str = "cpu") -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"the drift correction weight must be in (0, 1], got {weight}")
        self.weight = float(weight)
        self.drift = torch.zeros(shape, device=device)

    def reset(self) -> None:
        """Forget the errors seen (a new episode or goal)."""
        self.drift.zero_()

    def update(self, observed: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Take in one step: what the new observation encodes to and what the model predicted for it
        from the previous state and action (both in the estimate's shape); returns the updated estimate."""
        if observed.shape != self.drift.shape or predicted.shape != self.drift.shape:
            raise ValueError(f"observed and predicted must be {tuple(self.drift.shape)}, got "
                             f"{tuple(observed.shape)} and {tuple(predicted.shape)}")
        self.drift.lerp_((observed - predicted).to(self.drift), self.weight)
        return self.drift
