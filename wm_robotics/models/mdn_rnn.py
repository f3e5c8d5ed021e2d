"""M of World Models (Ha & Schmidhuber 2018): an LSTM whose output is a mixture density over the next z.

An LSTM cell reads [z, a] and its new hidden state h parameterises p(z' | h): for each of the
``z_dim`` latent dimensions an independent mixture of ``mixtures`` (K = 5) 1-d Gaussians with
its own weights, as in the original implementation. Shapes of a mixture: ``logits``, ``mean``,
``log_std`` are (..., z_dim, K).

Sampling temperature τ (the original's ``temperature``): mixture logits are divided by τ and
component stds multiplied by √τ; τ → 0 gives the mean of the most likely component, τ > 1 a
wider, more uncertain dream.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from wm_robotics.models.nets import OutputLinear

Mixture = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: log-std bounds of the components, for a finite likelihood on near-constant latent dims.
_LOG_STD_RANGE = (-7.0, 3.0)


def mdn_log_prob(mixture: Mixture, z: torch.Tensor) -> torch.Tensor:
    """log p(z) (...) of ``z`` (..., Z) under per-dimension mixtures (..., Z, K), summed over Z."""
    logits, mean, log_std = mixture
    component = -0.5 * ((z.unsqueeze(-1) - mean) / log_std.exp()).square() - log_std - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(F.log_softmax(logits, -1) + component, -1).sum(-1)


def mdn_sample(mixture: Mixture, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One z (..., Z) per mixture (..., Z, K) at ``temperature`` τ ≥ 0 (0: mode of the likeliest component)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits, mean, log_std = mixture
    if temperature == 0:
        return mean.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)
    uniform = torch.rand(logits.shape, device=logits.device, dtype=logits.dtype, generator=generator)
    gumbel = -uniform.clamp(min=1e-20).log().neg().log()
    pick = (logits / temperature + gumbel).argmax(-1, keepdim=True)  # Gumbel-max: a softmax(logits / τ) draw
    noise = torch.randn(mean.shape[:-1], device=mean.device, dtype=mean.dtype, generator=generator)
    return (mean.gather(-1, pick).squeeze(-1)
            + log_std.gather(-1, pick).squeeze(-1).exp() * math.sqrt(temperature) * noise)


class MDNRNN(nn.Module):
    """LSTM cell over [z, a] and a mixture-density head p(z' | h); see the module docstring."""

    def __init__(self, z_dim: int, action_dim: int, hidden: int = 256, mixtures: int = 5) -> None:
        super().__init__()
        if hidden < 1 or mixtures < 1:
            raise ValueError(f"hidden and mixtures must be positive, got hidden={hidden}, mixtures={mixtures}")
        self.z_dim, self.hidden, self.mixtures = z_dim, hidden, mixtures
        self.cell = nn.LSTMCell(z_dim + action_dim, hidden)
        self.head = OutputLinear(hidden, 3 * z_dim * mixtures)

    def forward(self, z: torch.Tensor, action: torch.Tensor, carry: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One LSTM step: (z (B, Z), a (B, A), (h, c) each (B, hidden)) → new (h, c)."""
        return self.cell(torch.cat([z, action], -1), carry)

    def mixture(self, h: torch.Tensor) -> Mixture:
        """p(z' | h) for hidden states (..., hidden): (logits, mean, log_std), each (..., z_dim, K)."""
        logits, mean, log_std = self.head(h).unflatten(-1, (3, self.z_dim, self.mixtures)).unbind(-3)
        return logits, mean, log_std.clamp(*_LOG_STD_RANGE)
