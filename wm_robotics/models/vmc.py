"""World Models (Ha & Schmidhuber 2018) behind the ``WorldModel`` seam: ConvVAE V + MDN-RNN M.

A state is a dict: ``z`` (..., z_dim) the latent of an observation (sampled from the VAE's
posterior when filtering, from the MDN when imagining), ``h`` and ``c`` (..., hidden) the LSTM
state that has read every earlier [z, a]. With the Dreamer-aligned batches of
:mod:`wm_robotics.models.base`, step t reads [z_{t−1}, a_t] (a_t led to observation t), so h_t
predicts z_t; ``features`` = [z_t, h_t] (the controller's input in the original), the reward and
continue heads read them. Where ``is_first`` is set the state restarts from zeros and the
incoming action is zeroed, as in the RSSM.

``loss(batch)`` = VAE (reconstruction + β · max(KL, ``kl_free`` · z_dim)) + MDN
negative log-likelihood of z_t given h_t + reward MSE + continue BCE, averaged over (B, T). M
and the heads read z detached, so V learns from its own loss only, as in the original (which
trained V first and M on its fixed latents). The MDN term skips the first step of a sequence
unless it starts an episode (its h has not seen the past). β ramps linearly from 0 to
``kl_weight`` over the first ``kl_warmup`` updates (counted by ``after_step``, saved with the
weights), the usual cure for a decoder that learns to ignore z before z says anything. With
``vae_batch`` > 0, V learns from that many independent replay frames per update (the batch's
``frames/obs/<key>``, as the original trained V on shuffled frames; a batch without them trains
V on its sequences) and the sequences are encoded without gradient: consecutive frames of a few
windows barely differ, and V trained on 8 windows × 32 steps stayed at the mean frame where 256
independent frames drew the cart within 500–750 updates (docs/results/world_models.md).
``temperature`` τ is used by ``imagine`` (set the attribute to dream at another τ).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F
from typing_extensions import override

from wm_robotics.models.base import State, WorldModel, loss_metrics, stack_states
from wm_robotics.models.encoders import DECODER_METRICS
from wm_robotics.models.mdn_rnn import MDNRNN, mdn_log_prob, mdn_sample
from wm_robotics.models.nets import mlp
from wm_robotics.models.vae import ConvVAE

#: Size presets: "s" is the original's CarRacing model (z 32, LSTM 256, K 5, conv widths 32..256);
#: "xs" is ours for CPU runs.
SIZES: dict[str, dict[str, int]] = {
    "xs": dict(z_dim=32, hidden=128, mixtures=5, cnn_depth=16, units=128, layers=1),
    "s": dict(z_dim=32, hidden=256, mixtures=5, cnn_depth=32, units=256, layers=1),
}


class VMCWorldModel(WorldModel):
    """ConvVAE + MDN-RNN with reward and continue heads; see the module docstring.

    ``config`` holds the constructor arguments for rebuilding from a checkpoint.
    """

    SIZES = SIZES

    def __init__(self, obs_shapes: dict[str, tuple], action_dim: int, z_dim: int = 32, hidden: int = 256,
                 mixtures: int = 5, cnn_depth: int = 32, units: int = 256, layers: int = 1, kl_weight: float = 1.0,
                 kl_free: float = 0.5, kl_warmup: int = 0, init_std: float = 0.05, vae_batch: int = 0,
                 temperature: float = 1.0) -> None:
        super().__init__()
        if min(temperature, kl_weight, kl_free, kl_warmup, vae_batch) < 0:
            raise ValueError("temperature, kl_weight, kl_free, kl_warmup and vae_batch must be >= 0, got "
                             f"{temperature}, {kl_weight}, {kl_free}, {kl_warmup}, {vae_batch}")
        self.config = dict(obs_shapes={k: tuple(v) for k, v in obs_shapes.items()}, action_dim=action_dim,
                           z_dim=z_dim, hidden=hidden, mixtures=mixtures, cnn_depth=cnn_depth, units=units,
                           layers=layers, kl_weight=kl_weight, kl_free=kl_free, kl_warmup=kl_warmup, init_std=init_std,
                           vae_batch=vae_batch, temperature=temperature)
        self.vae = ConvVAE(obs_shapes, z_dim, cnn_depth, units, layers, init_std)
        self.obs_keys = self.vae.keys
        self.action_dim = action_dim
        self.rnn = MDNRNN(z_dim, action_dim, hidden, mixtures)
        self.feature_dim = z_dim + hidden
        self.reward_head = mlp(self.feature_dim, units, layers, 1, zero_out=True)
        self.continue_head = mlp(self.feature_dim, units, layers, 1)
        self.kl_weight, self.kl_free, self.kl_warmup, self.temperature = kl_weight, kl_free, kl_warmup, temperature
        self.frames_per_update = vae_batch
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @override
    def after_step(self) -> None:
        """Count optimiser steps (the KL warm-up's clock)."""
        self.updates += 1

    @property
    def kl_scale(self) -> torch.Tensor:
        """β (a 0-d tensor on the model's device): ``kl_weight`` scaled by the warm-up's progress. A tensor,
        not a float: no device sync, and a compiled loss does not recompile as β grows."""
        if self.kl_warmup == 0:
            return torch.full((), self.kl_weight, device=self.updates.device)
        return self.kl_weight * (self.updates.float() / self.kl_warmup).clamp(max=1.0)

    # -- filtering -------------------------------------------------------------------------
    def _advance(self, state: State, action: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LSTM step on [z, a] from ``state`` (B, ...), restarted from zeros where ``keep`` (B, 1) is 0."""
        return self.rnn(state["z"] * keep, action * keep, (state["h"] * keep, state["c"] * keep))

    def _filter(self, z: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor, state: State | None
                ) -> tuple[State, State]:
        """Run the LSTM along observed latents z (B, T, Z): (states (B, T, ...), last state (B, ...))."""
        state = self.initial(z.shape[0]) if state is None else state
        keep = 1.0 - is_first.to(z.dtype).unsqueeze(-1)  # (B, T, 1)
        states = []
        for t in range(z.shape[1]):
            h, c = self._advance(state, action[:, t], keep[:, t])
            state = {"z": z[:, t], "h": h, "c": c}
            states.append(state)
        return stack_states(states), state

    # -- the WorldModel seam ---------------------------------------------------------------
    @override
    def initial(self, batch_size: int) -> State:
        """The all-zero state (z = 0, h = c = 0)."""
        weight = self.rnn.head.weight
        zeros = dict(device=weight.device, dtype=weight.dtype)
        return {"z": torch.zeros(batch_size, self.vae.z_dim, **zeros),
                "h": torch.zeros(batch_size, self.rnn.hidden, **zeros),
                "c": torch.zeros(batch_size, self.rnn.hidden, **zeros)}

    @override
    def observe(self, obs: dict[str, torch.Tensor], action: torch.Tensor, is_first: torch.Tensor,
                state: State | None = None) -> tuple[State, State]:
        z = ConvVAE.sample(*self.vae.posterior(self._obs(obs)))  # (B, T, Z)
        return self._filter(z, self._tensor(action, torch.float32), self._tensor(is_first, torch.bool), state)

    @override
    def step(self, state: State, action: torch.Tensor, obs: dict[str, torch.Tensor],
             is_first: torch.Tensor) -> State:
        keep = 1.0 - self._tensor(is_first, torch.bool).to(state["h"].dtype).unsqueeze(-1)
        h, c = self._advance(state, self._tensor(action, torch.float32), keep)
        return {"z": ConvVAE.sample(*self.vae.posterior(self._obs(obs))), "h": h, "c": c}

    @override
    def img_step(self, state: State, action: torch.Tensor) -> State:
        """Dream one step: z' sampled from the MDN at ``temperature``."""
        h, c = self.rnn(state["z"], action, (state["h"], state["c"]))
        return {"z": mdn_sample(self.rnn.mixture(h), self.temperature), "h": h, "c": c}

    @override
    def features(self, state: State) -> torch.Tensor:
        """[z, h] → (..., z_dim + hidden)."""
        return torch.cat([state["z"], state["h"]], -1)

    @override
    def predict_reward(self, features: torch.Tensor) -> torch.Tensor:
        return self.reward_head(features).squeeze(-1)

    @override
    def predict_continue(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.continue_head(features).squeeze(-1))

    @override
    def decode(self, state: State, keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The VAE decoder on z: ``pixels`` float (..., 64, 64, C) in [0, 1], ``proprio`` (..., D) raw units."""
        return self.vae.decoder(state["z"], keys)

    @override
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], State]:
        obs = self._obs({key: batch[f"obs/{key}"] for key in self.obs_keys})
        reward = self._tensor(batch["reward"], torch.float32)
        cont = 1.0 - self._tensor(batch["is_terminal"], torch.float32)
        is_first = self._tensor(batch["is_first"], torch.bool)
        if f"frames/obs/{self.obs_keys[0]}" in batch:  # the Trainer adds them when vae_batch > 0
            recon, kl, _ = self.vae.loss(self._obs({key: batch[f"frames/obs/{key}"] for key in self.obs_keys}))  # (N,)
            with torch.no_grad():
                z = ConvVAE.sample(*self.vae.posterior(obs))  # (B, T, Z)
        else:
            recon, kl, z = self.vae.loss(obs)  # (B, T) each; z (B, T, Z)
        post, _ = self._filter(z.detach(), self._tensor(batch["action"], torch.float32), is_first, None)
        feat = self.features(post)  # (B, T, F), z detached
        valid = torch.ones_like(reward)
        valid[:, 0] = is_first[:, 0].to(valid.dtype)  # h_0 of a mid-episode window has not seen the past
        nll = -mdn_log_prob(self.rnn.mixture(post["h"]), post["z"])  # (B, T)
        terms = {DECODER_METRICS[key]: value.mean() for key, value in recon.items()}
        beta = self.kl_scale
        terms["loss/kl"] = beta * kl.clamp(min=self.kl_free * self.vae.z_dim).mean()
        terms["loss/mdn"] = (nll * valid).sum() / valid.sum().clamp(min=1.0)
        terms["loss/reward"] = (self.predict_reward(feat) - reward).square().mean()
        terms["loss/continue"] = F.binary_cross_entropy_with_logits(self.continue_head(feat).squeeze(-1), cont)
        total = sum(terms.values())
        with torch.no_grad():
            stats = {"loss/total": total, **terms, "kl/value": kl.mean(), "latent/z_std": z.std(),
                     "kl/beta": beta}
        posterior = {key: value.detach() for key, value in post.items()}
        return total, loss_metrics(stats), posterior
