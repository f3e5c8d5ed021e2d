"""JEPA world model: predicts future *representations*, never pixels (TD-MPC2 / V-JEPA 2-AC line).

An encoder (CNN for pixels, symlog MLP for proprio, both when both; ``encoders.py``) and a linear
projection (``latent_encoder.py``) give the latent z, optionally SimNorm'd (softmax over groups of 8, TD-MPC2), after a
LayerNorm with ``latent_layernorm`` (TD-MPC2's; the predictor's output gets the same). An
action-conditioned MLP predictor rolls it forward: z' = f(z, a); with ``split_dynamics`` (and a
``split_latent``) the proprio block is a proprio-only model inside the pixel one: a predictor of
its own that sees only that block and the action, no gradient from the pixel block's prediction
loss (that predictor reads the block detached), and a probe head reading only that block. A state
is ``{"latent": (..., L)}`` and ``features`` = the latent. The model is not recurrent: filtering
encodes each observation.

``loss(batch)`` rolls the predictor ``horizon`` steps from every start s = 0..T-horizon-1 of the
(B, T) sequences (a sequence must lie within one episode, as ``SequenceReplay`` samples them) and
regresses each step k on the target embedding of observation s+k with an L2 loss (mean over
dims) weighted ρ^(k-1). Targets (``target``): ``"ema"`` a stop-gradient EMA copy of the encoder
(BYOL / V-JEPA); ``"stopgrad"`` the online encoder under stop-gradient (TD-MPC2, SimSiam);
``"online"`` the online encoder *with* gradients (VICReg's setting), which collapses to a constant
embedding unless VICReg's variance and covariance terms (``vicreg_var``, ``vicreg_cov``, on the
online embeddings; with ``simnorm=false``, whose latents can reach their std of 1) hold it apart.

Optional heads (TD-MPC2 recipe when all are on): ``reward`` (symlog two-hot, predicted from the
state *arrived in*, the seam's convention, where TD-MPC2 reads R(z, a)); ``num_q`` Q functions
Q(z, a) trained by TD toward r + γ·(1 − terminal)·min of 2 random EMA target Qs at (z', π(z'))
(``q_dropout``: TD-MPC2's dropout in their first layer, in the losses only; ``q_bias``: biases in their
hidden Linears, as TD-MPC2's);
a tanh-Gaussian ``policy`` prior (trained by the behaviour, ``behaviors/mpc_behavior.py``). Reward
and value losses backpropagate into the encoder and predictor. ``probe_decoder`` reconstructs the
observations from *detached* latents, so imaginations can be shown without changing what is learned.
``pose_probe`` (with ``split_dynamics`` over pixels and proprio) reads the proprio dims ``pose_dims`` (all
by default) from a frame alone (``models/pose_probe.py``; weight ``pose_coef``): from the pixel block, whose
encoder it then trains to see the robot's pose, or with ``pose_reader="own"`` from a CNN of its own;
``pose_angles`` are read as (sin, cos); ``pose_shift`` > 0 shifts the frames it learns from by up to that many
pixels (``augment.py``). ``read_pose`` tells a goal *frame*'s joint angles without its proprio.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from typing_extensions import override

from wm_robotics.models.augment import random_shift
from wm_robotics.models.base import State, WorldModel, loss_metrics
from wm_robotics.models.encoders import ObservationDecoder
from wm_robotics.models.ensemble import EnsembleMLP
from wm_robotics.models.latent_encoder import LatentEncoder, latent_norm
from wm_robotics.models.nets import TwoHot, mlp
from wm_robotics.models.policy_prior import TanhGaussianPolicy
from wm_robotics.models.pose_probe import POSE_READERS, PoseProbe
from wm_robotics.models.proprio_block import ProprioBlockModel

#: Size presets: TD-MPC2's 1M ("xs") and 5M ("s") shapes (encoder 256, MLPs 384/512, latent 128/512,
#: 2 / 5 Q functions); TD-MPC2's pixel CNN is replaced by ours at depth 16/32.
SIZES: dict[str, dict[str, int]] = {
    "xs": dict(latent=128, units=384, enc_units=256, enc_layers=1, layers=2, num_q=2, cnn_depth=16),
    "s": dict(latent=512, units=512, enc_units=256, enc_layers=1, layers=2, num_q=5, cnn_depth=32),
}
TARGETS = ("ema", "stopgrad", "online")


class BlockProbe(nn.Module):
    """Probe decoder of a ``split_dynamics`` latent: proprio read from the proprio block alone (so the
    pixel block's prediction errors never reach the decoded joint angles), other keys from the whole
    latent. Same interface as ``ObservationDecoder``."""

    def __init__(self, latent: int, obs_shapes: dict[str, tuple], block: slice, cnn_depth: int, units: int,
                 layers: int) -> None:
        super().__init__()
        self.block = block
        self.whole = ObservationDecoder(latent, {k: v for k, v in obs_shapes.items() if k != "proprio"},
                                        cnn_depth, units, layers)
        self.proprio = ObservationDecoder(block.stop - block.start, {"proprio": obs_shapes["proprio"]},
                                          cnn_depth, units, layers)

    def forward(self, latent: torch.Tensor, keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Reconstructions of ``keys`` (all when None) from latents (..., L)."""
        return {**self.whole(latent, keys), **self.proprio(latent[..., self.block], keys)}

    def loss(self, latent: torch.Tensor, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-key reconstruction losses of ``obs`` from ``latent``."""
        return {**self.whole.loss(latent, obs), **self.proprio.loss(latent[..., self.block], obs)}


def vicreg_terms(z: torch.Tensor, gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's (variance, covariance) terms of embeddings (N, L): hinge of per-dim std below ``gamma``,
    and the squared off-diagonal covariance summed and divided by L."""
    z = z - z.mean(0)
    variance = torch.relu(gamma - torch.sqrt(z.var(0) + 1e-4)).mean()
    cov = (z.T @ z) / max(len(z) - 1, 1)
    covariance = (cov.square().sum() - cov.diagonal().square().sum()) / z.shape[-1]
    return variance, covariance


class JEPAWorldModel(WorldModel):
    """Encoder + latent predictor (+ optional reward, Q-ensemble, policy prior and probe decoder)."""

    SIZES = SIZES

    def __init__(self, obs_shapes: dict[str, tuple], action_dim: int, latent: int = 512, units: int = 512,
                 layers: int = 2, enc_units: int = 256, enc_layers: int = 1, cnn_depth: int = 32,
                 simnorm: bool = True, target: str = "ema", target_decay: float = 0.99, vicreg_var: float = 0.0,
                 vicreg_cov: float = 0.0, horizon: int = 3, rho: float = 0.5, reward: bool = True, num_q: int = 5,
                 policy: bool = True, probe_decoder: bool = False, bins: int = 101, vmin: float = -10.0,
                 vmax: float = 10.0, discount: float = 0.99, q_tau: float = 0.01, consistency_coef: float = 20.0,
                 split_latent: bool = False, split_dynamics: bool = False, reward_coef: float = 0.1,
                 value_coef: float = 0.1, pose_probe: bool = False, pose_coef: float = 1.0,
                 pose_angles: Sequence[int] = (), pose_reader: str = "shared",
                 pose_dims: Sequence[int] | None = None, pose_shift: int = 0, q_dropout: float = 0.0,
                 latent_layernorm: bool = False, q_bias: bool = False) -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        if num_q and not policy:
            raise ValueError("Q functions bootstrap from the policy prior: num_q > 0 needs policy=true")
        if simnorm and latent % 8:
            raise ValueError(f"SimNorm needs a latent size divisible by 8, got {latent}")
        if simnorm and (vicreg_var or vicreg_cov):
            raise ValueError("VICReg's terms need simnorm=false: SimNorm dims lie in [0, 1] (std at most 0.5, never "
                             "the variance hinge's 1) and each group sums to 1 (covariances that cannot vanish)")
        self.config = dict(obs_shapes={k: tuple(v) for k, v in obs_shapes.items()}, action_dim=action_dim,
                           latent=latent, units=units, layers=layers, enc_units=enc_units, enc_layers=enc_layers,
                           cnn_depth=cnn_depth, simnorm=simnorm, target=target, target_decay=target_decay,
                           vicreg_var=vicreg_var, vicreg_cov=vicreg_cov, horizon=horizon, rho=rho, reward=reward,
                           num_q=num_q, policy=policy, probe_decoder=probe_decoder, bins=bins, vmin=vmin,
                           vmax=vmax, discount=discount, q_tau=q_tau, consistency_coef=consistency_coef,
                           split_latent=split_latent, split_dynamics=split_dynamics, reward_coef=reward_coef,
                           value_coef=value_coef, pose_probe=pose_probe, pose_coef=pose_coef,
                           pose_angles=list(pose_angles), pose_reader=pose_reader,
                           pose_dims=None if pose_dims is None else list(pose_dims), pose_shift=pose_shift,
                           q_dropout=q_dropout, latent_layernorm=latent_layernorm, q_bias=q_bias)
        self.encoder = LatentEncoder(obs_shapes, latent, enc_units, enc_layers, cnn_depth, simnorm, split_latent,
                                     latent_layernorm)
        self.obs_keys, self.action_dim, self.feature_dim = self.encoder.obs.keys, action_dim, latent
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False) if target == "ema" else None
        if split_dynamics and not split_latent:
            raise ValueError("split_dynamics needs split_latent=true (the proprio block it predicts apart)")
        # with split_dynamics over pixels and proprio: the proprio block's dims (one key: nothing to split)
        self.proprio_block = self.encoder.block("proprio") if split_dynamics and "proprio" in self.obs_keys else None
        own = 0 if self.proprio_block is None else self.proprio_block.stop - self.proprio_block.start
        self.dynamics = nn.Sequential(mlp(latent + action_dim, units, layers, latent - own),
                                      latent_norm(latent - own, simnorm, latent_layernorm))
        self.proprio_dynamics = nn.Sequential(mlp(own + action_dim, units, layers, own),
                                              latent_norm(own, simnorm, latent_layernorm)) if own else None
        self.twohot = TwoHot(bins, vmin, vmax)
        self.reward_head = mlp(latent, units, layers, bins, zero_out=True) if reward else None
        self.q = EnsembleMLP(num_q, latent + action_dim, units, layers, bins, q_dropout, q_bias) if num_q else None
        self.target_q = copy.deepcopy(self.q).requires_grad_(False) if num_q else None
        self.policy = TanhGaussianPolicy(latent, action_dim, units, layers) if policy else None
        self.decoder = self._probe(block=own > 0) if probe_decoder else None
        if pose_probe and (not own or "pixels" not in self.obs_keys):
            raise ValueError("pose_probe reads proprio from the pixel block: it needs pixels and proprio with "
                             "split_latent=true and split_dynamics=true")
        if pose_reader not in POSE_READERS:
            raise ValueError(f"pose_reader must be one of {POSE_READERS}, got {pose_reader!r}")
        if pose_shift < 0 or (pose_shift and not pose_probe):
            raise ValueError(f"pose_shift must be >= 0 pixels and needs pose_probe=true, got {pose_shift}")
        self.pose_shift = pose_shift
        self.frame_block = self.encoder.block("pixels") if pose_probe else None
        self.pose = self._pose_probe(pose_dims, pose_angles, pose_reader) if pose_probe else None
        self.target, self.horizon, self.rho, self.discount = target, horizon, rho, discount
        self.target_decay, self.q_tau = target_decay, q_tau
        self.vicreg_var, self.vicreg_cov = vicreg_var, vicreg_cov
        self.coefs = {"loss/consistency": consistency_coef, "loss/reward": reward_coef, "loss/value": value_coef,
                      "loss/vicreg_var": vicreg_var, "loss/vicreg_cov": vicreg_cov, "loss/probe": 1.0,
                      "loss/pose": pose_coef}

    # -- heads -------------------------------------------------------------------------------
    def next(self, latent: torch.Tensor, action: torch.Tensor, detach_block: bool = False) -> torch.Tensor:
        """One predictor step: (latent (..., L), action (..., A)) → next latent (..., L). ``detach_block`` (the
        loss's rollout, with ``split_dynamics``): the other blocks' predictor reads the proprio block detached, so
        their losses do not train it; elsewhere (an actor's backprop through imagination) every path keeps its
        gradient."""
        if self.proprio_block is None:
            return self.dynamics(torch.cat([latent, action], -1))
        block = self.proprio_block
        context = latent
        if detach_block:
            context = torch.cat([latent[..., :block.start], latent[..., block].detach(), latent[..., block.stop:]], -1)
        rest = self.dynamics(torch.cat([context, action], -1))
        own = self.proprio_next(latent[..., block], action)
        return torch.cat([rest[..., :block.start], own, rest[..., block.start:]], -1)

    def proprio_next(self, block_latent: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """One step of the proprio block's own predictor (``split_dynamics``): (..., block) → (..., block)."""
        return self.proprio_dynamics(torch.cat([block_latent, action], -1))

    def _probe(self, block: bool) -> ObservationDecoder | BlockProbe:
        """A probe decoder over the whole latent, or with ``block`` a ``BlockProbe`` (proprio from its block)."""
        cfg = self.config
        args = (cfg["obs_shapes"], cfg["cnn_depth"], cfg["enc_units"], cfg["enc_layers"])
        if block:
            return BlockProbe(self.feature_dim, args[0], self.proprio_block, *args[1:])
        return ObservationDecoder(self.feature_dim, *args)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        for old, new in (("pose_head.", "pose.head."), ("pose_encoder.", "pose.encoder.")):  # before PoseProbe (s14)
            for key in [key for key in state_dict if key.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        # a split_dynamics checkpoint saved before BlockProbe (session 8) has a whole-latent probe: keep that layout
        keys = [key[len(prefix):] for key in state_dict if key.startswith(prefix + "decoder.")]
        if isinstance(self.decoder, BlockProbe) and keys and not any(k.startswith("decoder.whole.") for k in keys):
            self.decoder = self._probe(block=False).to(next(self.parameters()).device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _pose_probe(self, dims: Sequence[int] | None, angles: Sequence[int], reader: str) -> PoseProbe:
        """The pose probe over the pixel block, or with ``reader="own"`` over a CNN of its own of the same size."""
        cfg, block = self.config, self.frame_block
        size, args = block.stop - block.start, (cfg["enc_units"], cfg["enc_layers"], cfg["cnn_depth"])
        pixels = {"pixels": cfg["obs_shapes"]["pixels"]}
        own = LatentEncoder(pixels, size, *args, simnorm=False) if reader == "own" else None
        return PoseProbe(size, cfg["obs_shapes"]["proprio"][0], dims, angles, own, cfg["cnn_depth"], *args[:2])

    def read_pose(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Proprio (..., P) as the pose probe reads it from ``obs["pixels"]`` (..., H, W, C) alone
        (``PoseProbe.read``)."""
        if self.pose is None:
            raise ValueError("read_pose needs a JEPA trained with pose_probe=true (model.overrides.pose_probe=true)")
        return self.pose.read(self._pose_features({"pixels": self._tensor(obs["pixels"])}))

    def _pose_features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the pose probe reads from ``obs["pixels"]`` (..., H, W, C): the pixel block, or its own CNN's."""
        if self.pose.encoder is not None:
            return self.pose.encoder(obs)
        return self.encoder.block_latent("pixels", obs)

    def proprio_view(self) -> ProprioBlockModel | None:
        """The proprio block as a world model of its own (``split_dynamics`` with a probe), else None."""
        if self.proprio_block is None or not isinstance(self.decoder, BlockProbe):
            return None
        return ProprioBlockModel(self)

    def pi(self, features: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy prior: (actions (..., A) in [-1, 1], log-probabilities (...))."""
        if self.policy is None:
            raise ValueError("this JEPA model has no policy prior (policy=false)")
        return self.policy(features, sample)

    def q_value(self, features: torch.Tensor, action: torch.Tensor, reduce: str = "mean",
                target: bool = False) -> torch.Tensor:
        """Q(z, a) (...): ``reduce`` ("min" or "mean") over 2 randomly chosen Q functions (TD-MPC2),
        of the EMA target network when ``target``; only those 2 are evaluated."""
        if self.q is None:
            raise ValueError("this JEPA model has no Q functions (num_q=0)")
        net = self.target_q if target else self.q
        members = torch.randperm(net.size, device=features.device)[:2] if net.size > 2 else None
        values = self.twohot.decode(net(torch.cat([features, action], -1), members))  # (2, ...)
        return values.amin(0) if reduce == "min" else values.mean(0)

    @override
    def after_step(self) -> None:
        """Move the EMA target encoder and target Q functions toward the online ones."""
        with torch.no_grad():
            for target, online, rate in ((self.target_encoder, self.encoder, 1 - self.target_decay),
                                         (self.target_q, self.q, self.q_tau)):
                if target is not None:
                    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), rate)

    # -- the WorldModel seam -----------------------------------------------------------------
    @override
    def initial(self, batch_size: int) -> State:
        return {"latent": torch.zeros(batch_size, self.feature_dim, device=next(self.parameters()).device)}

    @override
    def observe(self, obs: dict[str, torch.Tensor], action: torch.Tensor, is_first: torch.Tensor,
                state: State | None = None) -> tuple[State, State]:
        latent = self.encoder(self._obs(obs))  # (B, T, L): no recurrence, each observation encoded
        return {"latent": latent}, {"latent": latent[:, -1]}

    @override
    def step(self, state: State, action: torch.Tensor, obs: dict[str, torch.Tensor],
             is_first: torch.Tensor) -> State:
        return {"latent": self.encoder(self._obs(obs))}

    @override
    def img_step(self, state: State, action: torch.Tensor) -> State:
        return {"latent": self.next(state["latent"], action)}

    @override
    def features(self, state: State) -> torch.Tensor:
        return state["latent"]

    @override
    def predict_reward(self, features: torch.Tensor) -> torch.Tensor | None:
        return None if self.reward_head is None else self.twohot.decode(self.reward_head(features))

    @override
    def decode(self, state: State, keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Probe reconstructions (``ObservationDecoder`` units) from the latent; empty without a probe."""
        return {} if self.decoder is None else self.decoder(state["latent"], keys)

    @override
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], State]:
        """Rollout loss (see the module docstring). The returned states are the latent rollouts
        (B·S, horizon + 1, L), detached: encodings at each start s, then the predictor's steps
        (TD-MPC2 trains its policy on these); with T = horizon + 1, S = 1 and they are (B, T, L)."""
        obs = self._obs({key: batch[f"obs/{key}"] for key in self.obs_keys})
        action = self._tensor(batch["action"], torch.float32)
        steps, horizon = action.shape[1], self.horizon
        starts = steps - horizon
        if starts < 1:
            raise ValueError(f"sequences of {steps} steps are too short for the rollout horizon {horizon}: "
                             f"seq_len must be at least horizon + 1 = {horizon + 1}")
        index = torch.arange(starts, device=action.device)[:, None] + torch.arange(horizon, device=action.device)

        def windows(x: torch.Tensor) -> torch.Tensor:
            """(B, T-1, ...) values of steps 1..T-1 → (B·S, H, ...): the H steps after each start."""
            return x[:, index].flatten(0, 1)

        start = self.encoder({k: v[:, :starts] for k, v in obs.items()}).flatten(0, 1)  # (N, L), N = B·S
        with torch.set_grad_enabled(self.target == "online"):
            target_net = self.encoder if self.target_encoder is None else self.target_encoder
            target = windows(target_net({k: v[:, 1:] for k, v in obs.items()}))  # (N, H, L)
        actions = windows(action[:, 1:])  # (N, H, A): the action into each predicted step
        latent, predicted = start, []
        for k in range(horizon):
            latent = self.next(latent, actions[:, k], detach_block=True)
            predicted.append(latent)
        pred = torch.stack(predicted, 1)  # (N, H, L)
        weight = self.rho ** torch.arange(horizon, device=pred.device, dtype=pred.dtype)  # (H,)

        def over_steps(per_step: torch.Tensor) -> torch.Tensor:
            """(..., N, H) → ρ-weighted mean over the horizon of the mean over the rest."""
            return (per_step.reshape(-1, horizon).mean(0) * weight).sum() / horizon

        terms = {"loss/consistency": over_steps((pred - target).square().mean(-1))}
        if self.reward_head is not None or self.q is not None:
            reward = windows(self._tensor(batch["reward"], torch.float32)[:, 1:])  # (N, H)
        if self.reward_head is not None:
            terms["loss/reward"] = over_steps(self.twohot.loss(self.reward_head(pred), reward))
        if self.q is not None:
            with torch.no_grad():
                cont = 1.0 - windows(self._tensor(batch["is_terminal"], torch.float32)[:, 1:])
                next_action, _ = self.pi(target)
                td = reward + self.discount * cont * self.q_value(target, next_action, "min", target=True)
            before = torch.cat([start[:, None], pred[:, :-1]], 1)  # (N, H, L): the latent each action left
            logits = self.q(torch.cat([before, actions], -1))  # (num_q, N, H, bins)
            terms["loss/value"] = over_steps(self.twohot.loss(logits, td.expand(logits.shape[:-1])))
        if self.vicreg_var or self.vicreg_cov:
            terms["loss/vicreg_var"], terms["loss/vicreg_cov"] = vicreg_terms(start)
        if self.decoder is not None:
            recon = self.decoder.loss(start.detach(), {k: v[:, :starts].flatten(0, 1) for k, v in obs.items()})
            terms["loss/probe"] = sum(value.mean() for value in recon.values())
        if self.pose is not None:  # with gradient: the pixel encoder (or the probe's own) learns to see the pose
            if self.pose.encoder is None and not self.pose_shift:  # the pixel block of the frames already encoded
                seen = start[..., self.frame_block]
            else:
                frames = random_shift(obs["pixels"][:, :starts].flatten(0, 1), self.pose_shift)
                seen = self._pose_features({"pixels": frames})
            terms["loss/pose"] = self.pose.loss(seen, obs["proprio"][:, :starts].flatten(0, 1))
        total = sum(self.coefs[name] * value for name, value in terms.items())
        rollout = torch.cat([start[:, None], pred], 1).detach()
        with torch.no_grad():
            stats = {"loss/total": total, **terms, "latent/std": start.std(0).mean()}
            if self.q is not None:
                stats["value/td_target"] = td.mean()
        return total, loss_metrics(stats), {"latent": rollout}

