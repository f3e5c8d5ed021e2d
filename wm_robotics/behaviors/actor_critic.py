"""DreamerV3 actor-critic, learned purely in imagination (the "C" of the V/M/C table).

Action units: everything inside the learner (the actor, ``policy``, the actions it hands to
``WorldModel.imagine``) is in *normalised* units [-1, 1]. ``to_env`` maps them to the
simulator's [low, high]; ``from_env`` maps env-unit actions (as the replay stores them) back.
The world model must be trained on the same units it imagines with, so feed it
``from_env(batch["action"])`` (for dm_control the bounds are [-1, 1] and both maps are identity).

Policy: DreamerV3's continuous head: Normal(mean=tanh(mu), std=(1-0.1)·sigmoid(s+2)+0.1), samples
clipped to [-1, 1]. Actor gradients (``actor_grad``): ``"backprop"`` (default, DreamerV3's choice
for continuous actions) maximises the normalised λ-returns by backpropagating through the
model's dynamics, reward and continue heads and the critic's bootstrap (only the actor's
parameters are updated); ``"reinforce"`` uses score-function gradients on normalised
advantages, so imagination runs without autograd (cheaper). The REINFORCE score uses the
likelihood of the *clipped* action (a Normal censored at ±1: the tail mass at the bounds, as in
CAPG, Fujita & Maeda 2018); the plain Normal density at a clipped sample is biased and, under
all-negative advantages, drives the mean into a bound.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.distributions import Normal

from wm_robotics.behaviors.action_bounds import ActionBounds, Bounds
from wm_robotics.models.base import FeaturePolicy, State, WorldModel, loss_metrics
from wm_robotics.models.nets import TwoHot, adam, load_optimizer_state, mlp

#: "backprop": the actor maximises λ-returns by gradients through the model's dynamics (DreamerV3's
#: ``actor_grad_cont``); "reinforce": score-function gradients, imagination without autograd.
ACTOR_GRADS = ("backprop", "reinforce")


def lambda_returns(rewards: torch.Tensor, values: torch.Tensor, continues: torch.Tensor,
                   bootstrap: torch.Tensor, lambda_: float) -> torch.Tensor:
    """λ-returns (..., H), time on the last dim; a Python loop over H only.

    ``rewards[t]`` and ``continues[t]`` (discount × continue probability) belong to the
    transition s_t → s_{t+1}; ``values[t]`` = V(s_t) for t < H and ``bootstrap`` (...) = V(s_H).
    R_t = r_t + c_t · ((1 − λ) · V(s_{t+1}) + λ · R_{t+1}), with R_H = V(s_H).
    """
    next_values = torch.cat([values[..., 1:], bootstrap.unsqueeze(-1)], -1)
    interm = rewards + continues * (1 - lambda_) * next_values
    returns, last = [], bootstrap
    for t in reversed(range(rewards.shape[-1])):
        last = interm[..., t] + continues[..., t] * lambda_ * last
        returns.append(last)
    return torch.stack(returns[::-1], -1)


class ReturnNormalizer(nn.Module):
    """Scale = max(1, S), S an EMA of the per-batch (high − low) percentile range of returns."""

    def __init__(self, decay: float = 0.99, percentiles: tuple[float, float] = (0.05, 0.95)) -> None:
        super().__init__()
        if not 0.0 <= percentiles[0] < percentiles[1] <= 1.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 1, got {percentiles}")
        if not 0.0 <= decay <= 1.0:  # outside, the range EMA goes negative and normalisation is silently off
            raise ValueError(f"return_norm_decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.percentiles = percentiles
        self.register_buffer("range_ema", torch.zeros(()))

    @torch.no_grad()
    def forward(self, returns: torch.Tensor) -> torch.Tensor:
        """Update the EMA with ``returns`` (any shape) and return the current scale (a 0-d tensor)."""
        q = torch.tensor(self.percentiles, device=returns.device, dtype=returns.dtype)
        low, high = torch.quantile(returns.detach().flatten(), q)
        self.range_ema.lerp_(high - low, 1 - self.decay)
        return self.range_ema.clamp(min=1.0)


class ActorCritic(ActionBounds):
    """Gaussian actor + two-hot critic with a slow EMA regulariser, each with its own Adam."""

    def __init__(self, feature_dim: int, action_dim: int, action_low: Bounds = -1.0, action_high: Bounds = 1.0,
                 units: int = 512, layers: int = 2, horizon: int = 15, discount: float = 0.997,
                 lambda_: float = 0.95, entropy: float = 3e-4, actor_lr: float = 3e-5, critic_lr: float = 3e-5,
                 slow_critic_decay: float = 0.98, slow_reg: float = 1.0, return_norm_decay: float = 0.99,
                 return_norm_percentiles: tuple[float, float] = (0.05, 0.95), grad_clip: float = 100.0,
                 bins: int = 255, min_std: float = 0.1, max_std: float = 1.0,
                 imag_starts: int | None = None, actor_grad: str = "backprop") -> None:
        super().__init__(action_dim, action_low, action_high)
        if actor_grad not in ACTOR_GRADS:
            raise ValueError(f"actor_grad must be one of {ACTOR_GRADS}, got {actor_grad!r}")
        self.actor_grad = actor_grad
        if imag_starts is not None and imag_starts < 1:
            raise ValueError(f"imag_starts must be a positive integer or None (all), got {imag_starts}")
        self.imag_starts = imag_starts
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        if not 0.0 <= slow_critic_decay <= 1.0 or not 0.0 < min_std <= max_std:
            raise ValueError(f"need 0 <= slow_critic_decay <= 1 and 0 < min_std <= max_std, got {slow_critic_decay}, "
                             f"{min_std} and {max_std}")
        self.horizon, self.discount, self.lambda_ = horizon, discount, lambda_
        self.entropy_scale, self.slow_critic_decay, self.slow_reg = entropy, slow_critic_decay, slow_reg
        self.grad_clip, self.min_std, self.max_std = grad_clip, min_std, max_std
        self.actor = mlp(feature_dim, units, layers, 2 * action_dim)
        self.critic = mlp(feature_dim, units, layers, bins, zero_out=True)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.twohot = TwoHot(bins)
        self.return_norm = ReturnNormalizer(return_norm_decay, return_norm_percentiles)
        self.actor_opt = adam(self.actor.parameters(), actor_lr, eps=1e-5)
        self.critic_opt = adam(self.critic.parameters(), critic_lr, eps=1e-5)

    # --- acting ---------------------------------------------------------------------------
    def distribution(self, features: torch.Tensor) -> Normal:
        """Per-dimension Normal over normalised actions: mean tanh(mu), std in [min_std, max_std]."""
        mu, raw_std = self.actor(features).chunk(2, -1)
        std = (self.max_std - self.min_std) * torch.sigmoid(raw_std + 2.0) + self.min_std
        return Normal(torch.tanh(mu), std)

    @staticmethod
    def log_prob(dist: Normal, action: torch.Tensor) -> torch.Tensor:
        """Log-likelihood (...) of clipped actions (..., A): tail mass at ±1, density inside."""
        at_low = torch.special.log_ndtr((-1.0 - dist.loc) / dist.scale)
        at_high = torch.special.log_ndtr((dist.loc - 1.0) / dist.scale)
        inside = dist.log_prob(action)
        return torch.where(action <= -1.0, at_low, torch.where(action >= 1.0, at_high, inside)).sum(-1)

    def policy(self, features: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Actions (..., A) in normalised [-1, 1] units; pass as ``WorldModel.imagine(policy=...)``."""
        dist = self.distribution(features)
        return dist.sample().clamp(-1.0, 1.0) if sample else dist.mean

    def _imagination_policy(self, reparameterise: bool, taken: list[Normal]) -> FeaturePolicy:
        """The actor as imagination's policy: it reads stop-gradient features (DreamerV3's ``actor(sg(s))``),
        appends each step's distribution to ``taken`` (its loc and scale carry gradients to the actor even
        when the rollout runs without autograd: they serve the entropy and REINFORCE terms) and returns
        clipped samples, reparameterised (gradients through the dynamics) or not."""
        def policy(features: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                dist = self.distribution(features.detach())
            taken.append(dist)
            return (dist.rsample() if reparameterise else dist.sample()).clamp(-1.0, 1.0)
        return policy

    @torch.no_grad()
    def act(self, features: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Actions (..., A) in env units [low, high], for the simulator."""
        return self.to_env(self.policy(features, sample))

    def value(self, features: torch.Tensor) -> torch.Tensor:
        """The critic's value estimate (...)."""
        return self.twohot.decode(self.critic(features))

    # --- learning -------------------------------------------------------------------------
    def update(self, model: WorldModel, start_state: State) -> dict[str, float]:
        """One actor and critic step on trajectories imagined from every start state.

        ``start_state`` has any leading dims ((B, T, ...) from ``observe`` or (B, ...)); they are
        flattened into one batch of N start states (a random subset of ``imag_starts`` of them
        when set: the CPU presets' way to cut the cost per update). Losses at s_t are weighted by
        cont(s_0) · Π_{k=1..t} discount · cont(s_k) (DreamerV3 uses the true 1 − is_terminal for s_0;
        the seam's states carry no label, so the continue head's prediction stands in). The actor
        reads stop-gradient features (DreamerV3, dreamerv3-torch): with ``backprop`` its gradient
        runs through its sampled actions into the dynamics, never through its own input; the
        distributions it acted with serve the entropy and REINFORCE terms (no second actor pass).
        """
        backprop = self.actor_grad == "backprop"
        with torch.no_grad():
            lead = model.features(start_state).dim() - 1
            start = {k: v.detach().reshape(-1, *v.shape[lead:]) for k, v in start_state.items()}
            count = next(iter(start.values())).shape[0]
            if self.imag_starts is not None and self.imag_starts < count:
                chosen = torch.randperm(count, device=self.action_low.device)[: self.imag_starts]
                start = {k: v[chosen] for k, v in start.items()}
        with torch.set_grad_enabled(backprop):  # dynamics gradients only when the actor needs them
            taken: list[Normal] = []
            features, actions = model.imagine_features(               # (N, H+1, F), (N, H, A)
                start, self.horizon, policy=self._imagination_policy(backprop, taken))
            rewards = model.predict_reward(features[:, 1:])                        # (N, H)
            if rewards is None:
                raise ValueError("the world model has no reward head; the actor-critic needs predict_reward")
            cont = model.predict_continue(features)
            # float32 even when features are bf16: a bf16 discount 0.997 would be 0.996, 0.999 would be 1
            cont = features.new_ones(features.shape[:-1], dtype=torch.float32) if cont is None else cont.float()
            continues = self.discount * cont[:, 1:]                               # for s_t -> s_{t+1}
        with torch.no_grad():
            weight = cont[:, :1] * torch.cat([torch.ones_like(cont[:, :1]),
                                              continues[:, :-1].cumprod(1)], 1)     # (N, H)
            acting = features[:, :-1].detach().contiguous()  # s_0..s_{H-1}; contiguous: mm, not bmm
            slow_values = self.twohot.decode(self.slow_critic(acting))
        dist = Normal(torch.stack([d.loc for d in taken], 1), torch.stack([d.scale for d in taken], 1))  # (N, H, A)

        # one critic pass serves both losses: the critic's backward is restricted to its parameters,
        # the actor's (backprop) runs through the critic into the imagined features
        logits = self.critic(features)                                             # (N, H+1, bins)
        path_values = self.twohot.decode(logits if backprop else logits.detach())  # one decode serves both
        values = path_values.detach()
        returns = lambda_returns(rewards.detach(), values[:, :-1], continues.detach(), values[:, -1], self.lambda_)
        scale = self.return_norm(returns)

        entropy = dist.entropy().sum(-1)
        if backprop:  # returns differentiable through rewards, continues and bootstrap values
            objective = lambda_returns(rewards, path_values[:, :-1], continues, path_values[:, -1],
                                       self.lambda_) / scale
        else:
            objective = self.log_prob(dist, actions) * (returns - values[:, :-1]) / scale
        actor_loss = (weight * -(objective + self.entropy_scale * entropy)).mean()
        critic_loss = (weight * self.twohot.loss(logits[:, :-1], returns, slow_values,
                                                 scales=(1.0, self.slow_reg))).mean()

        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward(inputs=list(self.critic.parameters()), retain_graph=True)  # the actor's pass shares it
        actor_loss.backward(inputs=list(self.actor.parameters()))  # never into the model or critic
        actor_grad_norm = nn.utils.clip_grad_norm_(self.actor.parameters(), self.grad_clip)
        critic_grad_norm = nn.utils.clip_grad_norm_(self.critic.parameters(), self.grad_clip)
        for grad_norm, optimizer in ((actor_grad_norm, self.actor_opt), (critic_grad_norm, self.critic_opt)):
            if torch.isfinite(grad_norm):  # else the network keeps its weights and the Trainer stops on the metric
                optimizer.step()
        self._update_slow_critic()

        return loss_metrics({"actor/loss": actor_loss, "actor/entropy": entropy.detach().mean(),
                             "critic/loss": critic_loss, "return/mean": returns.mean(), "return/norm_scale": scale,
                             "imag/reward_mean": rewards.mean(), "value/mean": values[:, :-1].mean(),
                             "actor/grad_norm": actor_grad_norm, "critic/grad_norm": critic_grad_norm})

    @torch.no_grad()
    def _update_slow_critic(self) -> None:
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
            slow.lerp_(fast, 1.0 - self.slow_critic_decay)

    # --- checkpointing --------------------------------------------------------------------
    def full_state_dict(self) -> dict[str, dict]:
        """Weights, slow critic, return-normaliser statistics and both optimisers' states."""
        return {"module": self.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict()}

    def load_full_state_dict(self, state: dict[str, dict]) -> None:
        """Restore everything saved by :meth:`full_state_dict` (``torch.load(weights_only=True)``-safe)."""
        self.load_state_dict(state["module"])
        load_optimizer_state(self.actor_opt, state["actor_opt"])
        load_optimizer_state(self.critic_opt, state["critic_opt"])
