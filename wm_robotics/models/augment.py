"""Image augmentation for training frame readers: DrQ's random shift.

Each frame is translated by its own random integer offset in [-pad, pad] along each axis, the edge
rows and columns repeated into the gap (the same as replicate-padding by ``pad`` and cropping back).
A pose probe that learns from shifted frames (``pose_shift``) cannot memorise where pixels sit, only
how the links lie: on 20k frames of random reacher episodes its own CNN read training frames 8× better
than new ones without it (docs/results/jepa_goal.md, session 15).
"""

from __future__ import annotations

import torch


def random_shift(frames: torch.Tensor, pad: int) -> torch.Tensor:
    """``frames`` (N, H, W, C), any dtype, each shifted by up to ``pad`` pixels per axis, edges repeated."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if frames.dim() != 4:
        raise ValueError(f"frames must be (N, H, W, C), got shape {tuple(frames.shape)}")
    if pad == 0:
        return frames
    n, height, width, device = *frames.shape[:3], frames.device
    offsets = torch.randint(-pad, pad + 1, (2, n, 1), device=device)
    rows = (torch.arange(height, device=device) + offsets[0]).clamp(0, height - 1)  # (N, H)
    cols = (torch.arange(width, device=device) + offsets[1]).clamp(0, width - 1)  # (N, W)
    return frames[torch.arange(n, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
