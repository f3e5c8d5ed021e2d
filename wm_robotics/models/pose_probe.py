"""The pose probe of a JEPA (``models/jepa.py``, ``pose_probe=true``): the robot's pose read from a frame alone.

A head reads chosen proprio dims (``dims``, e.g. the joint angles: a single frame shows no velocity) from
features of the frame: the JEPA's pixel block (``reader="shared"``, so the pose loss teaches the pixel
encoder the pose) or a CNN of the probe's own (``reader="own"``, which the consistency loss never reaches).
Angle dims (``angles``) are learned as (sin, cos), since a frame shows an angle only up to whole turns, and
read back wrapped to [-π, π]. ``MPCController`` plans toward a goal given as a frame with it
(``goal_energy.from_frame``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from wm_robotics.models.encoders import ObservationDecoder

POSE_READERS = ("shared", "own")


class PoseProbe(nn.Module):
    """Proprio ``dims`` read from frame features (..., features); ``encoder``: the probe's own frame encoder
    (``reader="own"``), else None (the caller passes the pixel block's features)."""

    def __init__(self, features: int, proprio_dim: int, dims: Sequence[int] | None, angles: Sequence[int],
                 encoder: nn.Module | None, cnn_depth: int, units: int, layers: int) -> None:
        super().__init__()
        dims = list(range(proprio_dim)) if dims is None else list(dims)
        if not dims:
            raise ValueError("pose_dims must name at least one proprio dim for the probe to read (or null for all), "
                             "got []")
        if any(not 0 <= dim < proprio_dim for dim in dims):
            raise ValueError(f"pose_dims must be proprio dims in [0, {proprio_dim}), got {dims}")
        if len(set(dims)) < len(dims) or len(set(angles)) < len(angles):
            raise ValueError(f"pose_dims and pose_angles must not repeat a dim, got {dims} and {list(angles)}")
        if any(dim not in dims for dim in angles):
            raise ValueError(f"pose_angles must be proprio dims among pose_dims {dims}, got {list(angles)}")
        self.proprio_dim = proprio_dim
        #: the proprio dims the probe learns and ``read`` returns (the others come back NaN)
        self.register_buffer("dims", torch.tensor(dims, dtype=torch.long), persistent=False)
        #: the proprio dims that are angles
        self.register_buffer("angles", torch.tensor(list(angles), dtype=torch.long), persistent=False)
        # the angles' places in dims
        self.register_buffer("_angle_at", torch.tensor([dims.index(d) for d in angles], dtype=torch.long),
                             persistent=False)
        self.head = ObservationDecoder(features, {"proprio": (len(dims) + len(angles),)}, cnn_depth, units, layers)
        self.encoder = encoder

    def target(self, proprio: torch.Tensor) -> torch.Tensor:
        """What the head learns (..., dims + angles): the pose dims, angles as sines, then their cosines."""
        pose, at = proprio[..., self.dims], self._angle_at  # buffers: on the module's device
        angles = pose[..., at]
        return torch.cat([pose.index_copy(-1, at, angles.sin()), angles.cos()], -1)

    def loss(self, features: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """Mean loss of reading ``proprio`` (..., P) from ``features`` (..., features)."""
        return self.head.loss(features, {"proprio": self.target(proprio)})["proprio"].mean()

    def read(self, features: torch.Tensor) -> torch.Tensor:
        """Proprio (..., P) read from ``features``: angles wrapped to [-π, π], NaN outside ``dims``."""
        read = self.head(features, ["proprio"])["proprio"]
        at, size = self._angle_at, len(self.dims)
        pose = read[..., :size].index_copy(-1, at, torch.atan2(read[..., at], read[..., size:]))
        full = read.new_full((*read.shape[:-1], self.proprio_dim), float("nan"))
        return full.index_copy(-1, self.dims, pose)
