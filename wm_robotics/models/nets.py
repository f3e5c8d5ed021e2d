"""Building blocks shared by every world model and behaviour: MLPs, symlog, two-hot heads.

DreamerV3 conventions: Linear → LayerNorm → SiLU blocks; symlog squashing of inputs and
targets; scalars (rewards, values) predicted as a categorical over ``bins`` buckets spaced
evenly in symlog space (``TwoHot``), trained with cross-entropy against a two-hot target.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from wm_robotics.precision import float32_output_layers


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) · log(1 + |x|): compresses large magnitudes, identity near zero."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def adam(params: Iterable[nn.Parameter] | Iterable[dict], lr: float, eps: float = 1e-8) -> torch.optim.Adam:
    """Adam over parameters or parameter groups, with torch's fused kernel (one pass over all parameters: on
    CPU a 1M-parameter step takes ~0.8 ms instead of ~2.8 ms); every optimiser of the library is built here."""
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)


def parameter_groups(model: nn.Module, lr: float, encoder_lr_scale: float = 1.0) -> list[dict]:
    """``model``'s parameters as optimiser groups: those of its ``encoder`` at ``lr × encoder_lr_scale``
    (TD-MPC2 trains its encoder at 0.3×), the rest at the optimiser's ``lr``. One group when the scale is 1,
    as before the option, so runs saved without it resume."""
    if encoder_lr_scale == 1:
        return [{"params": list(model.parameters())}]
    if encoder_lr_scale < 0:
        raise ValueError(f"encoder_lr_scale must be >= 0, got {encoder_lr_scale}")
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"encoder_lr_scale={encoder_lr_scale} needs a model with an `encoder` module; "
                         f"{type(model).__name__} has none")
    own = {id(param) for param in encoder.parameters()}
    return [{"params": list(encoder.parameters()), "lr": lr * encoder_lr_scale},
            {"params": [param for param in model.parameters() if id(param) not in own]}]


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """The moments and step counts of ``state`` into ``optimizer``, which keeps its own settings (learning
    rates, eps, ``fused``): torch's ``load_state_dict`` would restore the saved ones, so a run resumed with a
    new ``lr`` would train on at the old one, and a state saved before :func:`adam` was fused would switch
    fusing off. The library has no learning-rate schedules, so nothing else lives in the saved settings."""
    saved = [len(group["params"]) for group in state["param_groups"]]
    wanted = [len(group["params"]) for group in optimizer.param_groups]
    if len(saved) != len(wanted):
        raise ValueError(f"the saved optimiser state has {len(saved)} parameter groups, this optimiser {len(wanted)}: "
                         "a run's model.encoder_lr_scale cannot switch between 1 (one group) and another value (the "
                         "encoder's parameters in a group of their own) when training resumes")
    if saved != wanted:
        raise ValueError(f"the saved optimiser state holds {saved} parameters per group, this model {wanted}: the "
                         "checkpoint comes from another model version (e.g. before MLP input layers had a bias); "
                         "it still loads for evaluation and control, but training cannot resume from it")
    own = optimizer.state_dict()["param_groups"]
    groups = [{**mine, "params": theirs["params"]} for mine, theirs in zip(own, state["param_groups"])]
    optimizer.load_state_dict({**state, "param_groups": groups})


class InputLinear(nn.Linear):
    """The first layer of an :func:`mlp`: a Linear *with* bias.

    LayerNorm right after a bias-free Linear is blind to the input's scale (LN(W·cx) = LN(W·x) for
    c > 0), which for a 6-D proprio vector throws away one of its six dimensions: an autoencoder
    of the reacher's proprio through that layer reads the joint angles back only to ~0.3 rad
    (0.01 rad with the bias). A checkpoint saved before this layer had a bias loads with a zero
    bias, which computes exactly what it computed then.
    """

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        if prefix + "weight" in state_dict:  # a state without this layer (strict=False) leaves its bias alone
            state_dict.setdefault(prefix + "bias", torch.zeros_like(self.bias))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class OutputLinear(nn.Linear):
    """The output layer of an :func:`mlp`: a float32 result, computed in float32 even under bf16 autocast.

    Outputs are what planners rank (rewards, two-hot value logits, latents): in bfloat16 a
    value logit of ~10 carries an error of ~0.04, enough to reorder MPPI's elites. The hidden
    layers hold most of the FLOPs and stay in the autocast dtype. Under ``precision=bf16_full``
    the layer itself runs in the autocast dtype and only its result is cast (DreamerV3's heads).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The linear layer; its result always float32."""
        with float32_outputs(x) as in_float32:
            return F.linear(x.float() if in_float32 else x, self.weight, self.bias).float()


@contextlib.contextmanager
def float32_outputs(x: torch.Tensor) -> Iterator[bool]:
    """Autocast off on ``x``'s device inside (for output layers), unless the precision keeps output
    layers in the compute dtype (``bf16_full``). Yields whether the layer inside computes in float32
    (feed it ``x.float()``); either way cast its result with ``.float()`` (a no-op when float32)."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        yield True
    elif float32_output_layers():
        with torch.autocast(device, enabled=False):
            yield True
    else:
        yield False


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int | None = None, zero_out: bool = False) -> nn.Sequential:
    """``layers`` × (Linear → LayerNorm → SiLU), then an optional linear output layer.

    Hidden layers after the first have no bias (DreamerV3's choice; TD-MPC2's have one); the first does
    (:class:`InputLinear`); the output layer computes in float32 (:class:`OutputLinear`). ``zero_out``
    initialises the output layer to zero (DreamerV3 does this for reward and critic heads so early
    predictions are 0 rather than noise).
    """
    blocks: list[nn.Module] = []
    dim = in_dim
    for index in range(layers):
        linear = InputLinear(dim, hidden) if index == 0 else nn.Linear(dim, hidden, bias=False)
        blocks += [linear, nn.LayerNorm(hidden), nn.SiLU(inplace=True)]
        dim = hidden
    if out_dim is not None:
        out = OutputLinear(dim, out_dim)
        if zero_out:
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
        blocks.append(out)
    return nn.Sequential(*blocks)


class TwoHot(nn.Module):
    """Symlog two-hot encoding of scalars over ``bins`` buckets in [low, high] (symlog space)."""

    def __init__(self, bins: int = 255, low: float = -20.0, high: float = 20.0) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError(f"bins must be at least 2, got {bins}")
        self.register_buffer("buckets", torch.linspace(low, high, bins), persistent=False)

    @property
    def bins(self) -> int:
        """Number of buckets."""
        return self.buckets.numel()

    def _neighbours(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two buckets around symlog(value): indices (..., 2) and their two-hot weights (..., 2)."""
        x = symlog(value).clamp(self.buckets[0], self.buckets[-1])
        upper = torch.searchsorted(self.buckets, x.contiguous(), right=False).clamp(1, self.bins - 1)
        lower = upper - 1
        low_value, high_value = self.buckets[lower], self.buckets[upper]
        weight_high = (x - low_value) / (high_value - low_value)
        return torch.stack([lower, upper], -1), torch.stack([1 - weight_high, weight_high], -1)

    def encode(self, value: torch.Tensor) -> torch.Tensor:
        """(...) scalars → (..., bins) two-hot weights on the two nearest buckets."""
        index, weight = self._neighbours(value)
        return torch.zeros(*value.shape, self.bins, device=value.device, dtype=weight.dtype).scatter_add_(
            -1, index, weight)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., bins) logits → (...) expected value, mapped back with symexp; in float32 even under
        bf16 autocast (a product and a sum, not a matmul, so autocast leaves them alone)."""
        return symexp((torch.softmax(logits.float(), -1) * self.buckets).sum(-1))

    def loss(self, logits: torch.Tensor, *values: torch.Tensor, scales: Sequence[float] | None = None) -> torch.Tensor:
        """Cross-entropy of ``logits`` against the two-hot encoding of each of ``values`` (per element),
        summed with ``scales`` (1 each by default); one log-softmax serves every target."""
        scales = [1.0] * len(values) if scales is None else scales
        if len(scales) != len(values) or not values:
            raise ValueError(f"loss needs at least one target and one scale per target, got {len(values)} "
                             f"targets and {len(scales)} scales")
        pairs = [self._neighbours(value.detach()) for value in values]  # two non-zero entries each, not all bins
        index = torch.cat([index for index, _ in pairs], -1)
        weight = torch.cat([weight if scale == 1.0 else weight * scale
                            for (_, weight), scale in zip(pairs, scales)], -1)
        return -(F.log_softmax(logits, -1).gather(-1, index) * weight).sum(-1)
