"""Acting by planning in the world model (TD-MPC2, PlaNet), with the policy prior trained alongside.

Every action is planned (``plan``, the hook the ``Agent`` calls for behaviours that have one): MPPI
or CEM (``planner``) maximising predicted rewards plus, when the model has Q functions and a policy
prior, a terminal value Q(z_H, π(z_H)) (mean of 2 random Qs) with the prior's trajectories mixed
into MPPI's samples (TD-MPC2). While training (``sample=True``) Gaussian noise is added to the
planned action: of the plan's own final std (TD-MPC2) or of a fixed ``noise`` (PlaNet: 0.3).
``objective="goal"`` plans nothing while training (goal-reaching models learn from uniformly
random actions, as DINO-WM's data) and reaches goals at deployment via ``MPCController.set_goal``.

``update(model, states)`` is TD-MPC2's policy step on detached latents: maximise
Q(z, π(z)) / S + α·A·H[π] with S a running 5th–95th percentile range of Q (floored at 1), weighted
ρ^t along the rollout; only the prior's parameters move. A model without a prior (e.g. the RSSM
in the ``planet`` preset) has nothing to train.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wm_robotics.behaviors.action_bounds import ActionBounds, Bounds
from wm_robotics.behaviors.planners import PLANNERS, build_planner
from wm_robotics.behaviors.planning import RewardObjective, SamplingPlanner
from wm_robotics.models.base import FeaturePolicy, State, WorldModel, loss_metrics
from wm_robotics.models.nets import adam, load_optimizer_state

OBJECTIVES = ("reward", "goal")


class MPCBehavior(ActionBounds):
    """A sampling planner over ``model`` plus the policy-prior learner; see the module docstring."""

    def __init__(self, model: WorldModel, action_low: Bounds = -1.0, action_high: Bounds = 1.0,
                 planner: str = "mppi", objective: str = "reward", discount: float = 0.99,
                 noise: float | None = None, lr: float = 3e-4, entropy: float = 1e-4, rho: float = 0.5,
                 grad_clip: float = 20.0, scale_tau: float = 0.01, settings: dict[str, Any] | None = None) -> None:
        super().__init__(model.action_dim, action_low, action_high)
        if planner not in PLANNERS:
            raise ValueError(f"unknown planner {planner!r}; valid planners: {sorted(PLANNERS)}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        object.__setattr__(self, "_model", model)  # a reference, not a submodule: its weights stay the model's
        prior = getattr(model, "policy", None)
        self.has_prior = isinstance(prior, nn.Module)
        self.has_value = getattr(model, "q", None) is not None
        if self.has_prior and not self.has_value:
            raise ValueError("the policy prior learns to maximise Q (TD-MPC2): a model with a policy needs Q functions "
                             "(model.overrides.num_q > 0), or turn the prior off (model.overrides.policy=false)")
        self.noise, self.entropy, self.rho, self.grad_clip, self.scale_tau = noise, entropy, rho, grad_clip, scale_tau
        self.register_buffer("q_scale", torch.ones(()))
        self.pi_opt = adam(prior.parameters(), lr, eps=1e-5) if self.has_prior else None
        # built for a goal run too, whose planner MPCController makes later: its settings are checked before it trains
        reward_planner = build_planner(planner, model.action_dim, RewardObjective(discount, self.value), self.policy,
                                       **(settings or {}))
        self.planner: SamplingPlanner | None = reward_planner if objective == "reward" else None

    # --- what the planner and MPCController read ---------------------------------------------
    @property
    def policy(self) -> FeaturePolicy | None:
        """The model's policy prior as features → actions (sampled unless ``sample=False``); None without one."""
        if not self.has_prior:
            return None
        return lambda features, sample=True: self._model.pi(features, sample)[0]

    @property
    def value(self) -> FeaturePolicy | None:
        """V(z) = mean of 2 random Q(z, π(z)) (TD-MPC2's terminal value); None without Q functions."""
        if not self.has_value:
            return None
        return lambda features: self._model.q_value(features, self._model.pi(features)[0], "mean")

    # --- acting ------------------------------------------------------------------------------
    @torch.inference_mode()
    def plan(self, model: WorldModel, state: State, is_first: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Normalised actions (E, A) for E environments; ``is_first`` (E,) restarts their warm starts."""
        num_envs = is_first.shape[0]
        if self.planner is None:
            return torch.rand(num_envs, self.action_low.numel(), device=self.action_low.device) * 2 - 1
        if is_first.any():
            self.planner.reset(is_first.nonzero().flatten().cpu())
        action = self.planner.plan(model, state)
        if sample:
            std = self.planner.last_info["std"][:, 0] if self.noise is None else self.noise
            action = action + std * torch.randn_like(action)
        return action.clamp(-1.0, 1.0)

    # --- learning ----------------------------------------------------------------------------
    def update(self, model: WorldModel, states: State) -> dict[str, float]:
        """One policy-prior step on the detached latents ``states`` (N, T, ...) from ``model.loss``."""
        if self.pi_opt is None or not self.has_value:
            return {}
        features = model.features(states).detach()
        features = features.reshape(-1, *features.shape[-2:]) if features.dim() > 2 else features[:, None]
        action, log_prob = model.pi(features)  # (N, T, A), (N, T)
        q = model.q_value(features, action, "mean")  # (N, T): gradients reach π through the action only
        with torch.no_grad():
            low, high = torch.quantile(q[:, 0], torch.tensor([0.05, 0.95], device=q.device))
            self.q_scale.lerp_((high - low).clamp(min=1.0), self.scale_tau)
        weight = self.rho ** torch.arange(q.shape[1], device=q.device, dtype=q.dtype)
        objective = q / self.q_scale - self.entropy * action.shape[-1] * log_prob
        loss = -(objective.mean(0) * weight).mean()
        prior = list(model.policy.parameters())
        self.pi_opt.zero_grad(set_to_none=True)
        loss.backward(inputs=prior)
        grad_norm = nn.utils.clip_grad_norm_(prior, self.grad_clip)
        if torch.isfinite(grad_norm):  # else the prior keeps its weights and the Trainer stops on the metric
            self.pi_opt.step()
        self.pi_opt.zero_grad(set_to_none=True)  # the model's own optimiser must never step the prior
        return loss_metrics({"pi/loss": loss, "pi/entropy": -log_prob.detach().mean(), "pi/q_mean": q.detach().mean(),
                             "pi/q_scale": self.q_scale, "pi/grad_norm": grad_norm})

    # --- checkpointing -----------------------------------------------------------------------
    def full_state_dict(self) -> dict[str, dict]:
        """Bounds, the Q scale and the prior's optimiser state (the prior's weights are the model's)."""
        return {"module": self.state_dict(), "pi_opt": self.pi_opt.state_dict() if self.pi_opt else {}}

    def load_full_state_dict(self, state: dict[str, dict]) -> None:
        """Restore what :meth:`full_state_dict` saved (``torch.load(weights_only=True)``-safe)."""
        self.load_state_dict(state["module"])
        if self.pi_opt is not None:
            load_optimizer_state(self.pi_opt, state["pi_opt"])
