"""Toy sizes of the RSSM and the VAE + MDN-RNN, and random training batches for any model."""

from __future__ import annotations

import torch

RSSM_TINY = dict(deter=16, stoch=4, classes=5, units=16, layers=1, cnn_depth=2)
VMC_TINY = dict(z_dim=4, hidden=16, mixtures=3, cnn_depth=4, units=16, layers=1)


def random_batch(shapes: dict[str, tuple], action_dim: int, batch: int = 2, length: int = 3,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """A replay-like batch (B, T, ...): random actions in [-1, 1], rewards and observations of ``shapes``; every
    sequence starts an episode and the first one ends in a terminal step."""
    gen = torch.Generator().manual_seed(seed)
    out = {
        "action": torch.rand(batch, length, action_dim, generator=gen) * 2 - 1,
        "reward": torch.randn(batch, length, generator=gen),
        "is_first": torch.zeros(batch, length, dtype=torch.bool),
        "is_terminal": torch.zeros(batch, length, dtype=torch.bool),
    }
    out["is_first"][:, 0] = True
    out["is_terminal"][0, -1] = True
    if "pixels" in shapes:
        out["obs/pixels"] = torch.randint(0, 256, (batch, length, *shapes["pixels"]), generator=gen, dtype=torch.uint8)
    if "proprio" in shapes:
        out["obs/proprio"] = torch.randn(batch, length, *shapes["proprio"], generator=gen)
    return out
