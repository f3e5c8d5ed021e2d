"""Checkpoints: one file with model, behaviour, optimisers, counters, RNG states and config.

Written atomically (temp file + rename) and read with ``torch.load(weights_only=True)``: only
tensors and plain Python containers, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_robotics.atomic import write_atomic

FORMAT = "wm_robotics.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or not a wm_robotics checkpoint."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus a format tag) to ``path`` atomically."""
    return write_atomic(path, lambda handle: torch.save({"format": FORMAT, **payload}, handle))


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The file a checkpoint ``path`` names: itself, or a run folder's ``checkpoints/latest.pt`` (or a
    checkpoints folder's ``latest.pt``)."""
    path = Path(path)
    if path.is_dir():
        return path / "checkpoints" / "latest.pt" if (path / "checkpoints").is_dir() else path / "latest.pt"
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (a file or a folder, ``checkpoint_file``) safely (``weights_only=True``) with errors that
    say what is wrong."""
    path = checkpoint_file(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - a corrupt file can fail in many ways
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a wm_robotics checkpoint (expected format {FORMAT!r})")
    return payload


def rng_state() -> dict[str, Any]:
    """Python, NumPy (legacy global), torch and (with CUDA) every GPU's RNG states as weights-only-safe values."""
    legacy = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],  # the second normal of a pair, cached (None when none is)
        "numpy": torch.from_numpy(legacy[1].astype(np.int64)),
        "numpy_pos": int(legacy[2]),
        "numpy_gauss": [int(legacy[3]), float(legacy[4])],  # has_gauss, cached_gaussian
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by :func:`rng_state`."""
    random.setstate((3, tuple(state["python"]), state.get("python_gauss")))  # checkpoints before session 60: none
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         *state.get("numpy_gauss", (0, 0.0))))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():  # else: the same GPUs not here
        torch.cuda.set_rng_state_all([value.cpu() for value in cuda])
