"""An ensemble of Q-function MLPs evaluated as one batched computation (TD-MPC2's Q ensemble).

Member m maps [features, action] (..., in_dim) through ``layers`` × (Linear → LayerNorm →
SiLU) to ``out_dim`` logits. Every layer is one batched matmul over the member dim (the first
reads the shared input through a broadcast view, so the hidden activations stay (M, N, hidden)
contiguous). ``members`` picks a subset (e.g. the two random heads TD-MPC2 reads), so unused
heads cost nothing. The hidden Linears have no bias unless ``bias`` (TD-MPC2's NormedLinear has one:
without it the first LayerNorm is blind to the scale of [features, action], LN(W·cx) = LN(W·x) for
c > 0, as ``nets.InputLinear`` explains; off by default so the presets' measured recipe and its
checkpoints stay as they were). ``dropout`` (TD-MPC2: 0.01) drops first-layer activations before their
LayerNorm in computations that record gradients only (the losses), never when planning or under
``no_grad`` (TD targets), as TD-MPC2's eval-mode target Qs and planner.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from wm_robotics.models.nets import float32_outputs


def _uniform(*shape: int, fan_in: int) -> nn.Parameter:
    """nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class EnsembleMLP(nn.Module):
    """``size`` independent MLPs ``in_dim → hidden (× layers) → out_dim``; the output layer starts at zero."""

    def __init__(self, size: int, in_dim: int, hidden: int, layers: int, out_dim: int, dropout: float = 0.0,
                 bias: bool = False) -> None:
        super().__init__()
        if size < 1 or layers < 1:
            raise ValueError(f"an ensemble needs size >= 1 and layers >= 1, got size={size}, layers={layers}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.size, self.hidden, self.dropout = size, hidden, dropout
        self.first = _uniform(in_dim, size * hidden, fan_in=in_dim)  # (in, M·hidden): all members at once
        self.deep = nn.ParameterList([_uniform(size, hidden, hidden, fan_in=hidden) for _ in range(layers - 1)])
        # (layers, size, 1, hidden), nn.Linear's initialisation per layer's fan-in; None: bias-free hidden Linears
        self.hidden_bias = nn.Parameter(torch.cat([_uniform(1, size, 1, hidden, fan_in=fan_in) for fan_in in
                                                   [in_dim] + [hidden] * (layers - 1)])) if bias else None
        self.norm_weight = nn.Parameter(torch.ones(layers, size, 1, hidden))
        self.norm_bias = nn.Parameter(torch.zeros(layers, size, 1, hidden))
        self.out_weight = nn.Parameter(torch.zeros(size, hidden, out_dim))
        self.out_bias = nn.Parameter(torch.zeros(size, 1, out_dim))

    def _block(self, x: torch.Tensor, layer: int, members: torch.Tensor | None) -> torch.Tensor:
        """LayerNorm (per-member affine) → SiLU on (M, N, hidden)."""
        weight, bias = self.norm_weight[layer], self.norm_bias[layer]  # (size, 1, hidden)
        if members is not None:
            weight, bias = weight[members], bias[members]
        # one affine layer_norm per member: torch's CPU kernel is faster with an affine than without,
        # and stacking M of them beats a plain layer_norm followed by a broadcast addcmul
        h = torch.stack([F.layer_norm(x_m, (self.hidden,), w_m[0], b_m[0]) for x_m, w_m, b_m in zip(x, weight, bias)])
        return F.silu(h, inplace=not h.requires_grad)  # in place under autograd would clone h

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, layer: int, members: torch.Tensor | None
                ) -> torch.Tensor:
        """Hidden Linear ``layer`` of the chosen members: (M, N, in) @ their rows of ``weight`` (size, in, hidden),
        plus their bias when the ensemble has one."""
        if members is not None:
            weight = weight[members]
        if self.hidden_bias is None:
            return torch.bmm(x, weight)
        bias = self.hidden_bias[layer]  # (size, 1, hidden)
        return torch.baddbmm(bias if members is None else bias[members], x, weight)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """(..., in_dim) → (M, ..., out_dim) for all members, or for the indices ``members`` (M,)."""
        lead = x.shape[:-1]
        first = self.first.view(-1, self.size, self.hidden).transpose(0, 1)  # (size, in, hidden), strided view
        count = self.size if members is None else members.shape[0]
        flat = x.reshape(-1, x.shape[-1])  # (N, in)
        h = self._linear(flat.expand(count, *flat.shape), first, 0, members)  # (M, N, hidden)
        if self.dropout and torch.is_grad_enabled():
            h = F.dropout(h, self.dropout)
        h = self._block(h, 0, members)
        for layer, weight in enumerate(self.deep, 1):
            h = self._block(self._linear(h, weight, layer, members), layer, members)
        out_w, out_b = (self.out_weight, self.out_bias) if members is None else (self.out_weight[members],
                                                                                 self.out_bias[members])
        with float32_outputs(h) as in_float32:  # logits in float32, as nets.OutputLinear
            return torch.baddbmm(out_b, h.float() if in_float32 else h, out_w).float().view(count, *lead, -1)
