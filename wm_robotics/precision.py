"""Compute precision of training updates and planner searches (``precision=fp32|bf16``).

``"bf16"`` runs matmuls and convolutions in bfloat16 under ``torch.autocast`` (DreamerV3's compute
dtype); parameters, optimiser states and gradients stay float32, and so do every MLP's output
layer (``nets.OutputLinear``: rewards, value logits, latents, categorical logits), two-hot decodes,
losses and the planner's statistics. On CPUs with AVX-512 BF16 or AMX a large matmul runs ~2× faster.
"""

from __future__ import annotations

import contextlib

import torch

#: compute dtypes by name (None: no autocast)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError listing them."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {sorted(PRECISIONS)}")
    return precision


def compute_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """A context running ``device``'s matmuls in ``precision`` (one of :data:`PRECISIONS`)."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    # no weight-cast cache on CUDA: a CUDA graph must not capture tensors the cache frees afterwards
    return torch.autocast(device.type, dtype=dtype, cache_enabled=device.type != "cuda")


def in_compute_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` cast once to the autocast dtype active on its device, unchanged outside autocast: for
    an input that several layers read (autocast would cast it again for each; the values are the same)."""
    device = tensor.device.type
    return tensor.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else tensor
