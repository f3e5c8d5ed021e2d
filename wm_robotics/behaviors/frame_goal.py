"""A goal given as a frame alone: the proprio fields a pose probe reads from it, kept up to date in closed loop.

The energy of ``goal_energy.from_frame`` compares the fields the model decodes from predicted latents
(its proprio path) with the fields its pose probe reads from the goal frame. Two corrections make the
read goal usable by a planner that starts from the robot's measured state:

- **nearest branch** (``unbounded`` angles: joints without limits, as the reacher's shoulder): an angle read
  from a frame is only known modulo 2π (a shoulder at 3.3 rad looks as at -2.98), so the goal angle is
  moved to the representative nearest the current angle. A joint with limits (the reacher's wrist,
  ±2.79 rad) keeps the angle as read: its nearest representative can lie beyond the limit;
- **pose feedback** (option): the probe's error on the *current* frame (what it reads minus the measured
  proprio) is subtracted from the goal it read. At the goal the current frame is the goal frame, so the
  corrected goal equals the measured state there whatever the probe's bias on such frames (e.g. the
  target sphere drawn over the finger): the goal is a fixed point of the loop, not of the probe's error.
"""

from __future__ import annotations

import math

import torch


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """``angle`` wrapped to [-π, π)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def angle_difference(a: torch.Tensor, b: torch.Tensor, angle_mask: torch.Tensor) -> torch.Tensor:
    """a - b, wrapped to [-π, π) where ``angle_mask`` (bool, broadcast to the last dim) marks an angle."""
    diff = a - b
    return torch.where(angle_mask, wrap_angle(diff), diff)


class FrameGoal:
    """The goal fields (F,) read from a goal frame, re-expressed near the current state at every step.

    ``read_goal``: (F,) fields read from the goal frame; ``angle_mask``: (F,) bool, True where a field is
    an angle (wrapped differences); ``unbounded_mask``: (F,) bool, the angles of joints without limits (goal
    on the branch nearest the measured angle); ``feedback``: subtract the probe's error on the current frame.
    """

    def __init__(self, read_goal: torch.Tensor, angle_mask: torch.Tensor, unbounded_mask: torch.Tensor | None = None,
                 feedback: bool = False) -> None:
        unbounded_mask = torch.zeros_like(angle_mask) if unbounded_mask is None else unbounded_mask
        if read_goal.dim() != 1 or not read_goal.shape == angle_mask.shape == unbounded_mask.shape:
            raise ValueError("read_goal, angle_mask and unbounded_mask must all be (F,), got "
                             f"{tuple(read_goal.shape)}, "
                             f"{tuple(angle_mask.shape)} and {tuple(unbounded_mask.shape)}")
        if bool((unbounded_mask.bool() & ~angle_mask.bool()).any()):
            raise ValueError("unbounded_mask marks fields that angle_mask does not mark as angles")
        self.read_goal, self.angle_mask, self.feedback = read_goal, angle_mask.bool(), feedback
        self.unbounded_mask = unbounded_mask.bool()

    def goal(self, measured: torch.Tensor, read_now: torch.Tensor | None = None) -> torch.Tensor:
        """The goal (F,) to plan toward from the ``measured`` fields (F,) of the current state;
        ``read_now`` (F,): what the probe reads from the current frame (needed with ``feedback``)."""
        goal = self.read_goal
        for name, fields in (("measured", measured), ("read_now", read_now)):
            if fields is not None and fields.shape != goal.shape:
                raise ValueError(f"{name} must be the {tuple(goal.shape)} goal fields, got {tuple(fields.shape)}")
        if self.feedback:
            if read_now is None:
                raise ValueError("pose feedback needs the fields read from the current frame (read_now)")
            goal = goal - angle_difference(read_now, measured, self.angle_mask)
        return torch.where(self.unbounded_mask, measured + wrap_angle(goal - measured), goal)
