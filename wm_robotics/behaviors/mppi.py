"""MPPI planner in the style of TD-MPC2: Gaussian samples + policy-prior trajectories, softmax-weighted refit.

Per ``plan`` call, ``policy_samples`` trajectories are rolled out once from the optional policy
prior (``model.imagine(policy=...)``, actions clamped to the bounds) and their imagined states are
kept: TD-MPC2 imagines them again in every iteration (a stochastic model's one draw is kept here for
the whole call). Each iteration imagines ``samples`` Gaussian sequences around the current mean/std,
scores them with the prior's, keeps the top ``elites`` and refits mean and std as their weighted
mean and std with weights softmax(temperature · score) (TD-MPC2's
exp(temperature · (score − max)), normalised). Differences from TD-MPC2's ``_plan``: its
``num_samples`` counts the policy trajectories, here ``samples`` are the Gaussian ones only; the
exploration noise TD-MPC2 adds to the returned action during training is left to the caller.

``prior_coef`` > 0 (not TD-MPC2's; off by default) regularises the search toward the prior: every
candidate's score loses ``prior_coef`` · Σ_t ‖a_t − ā_t‖², ā the mean of the prior's trajectories,
the form LOOP's actor-regularised control (Sikchi et al., 2021) takes with a Gaussian prior around the
actor. Where the objective cannot tell plans apart, the prior's choice wins: at horizon 3 a
cartpole-swingup model scores keeping the cart parked off centre a hair above the prior's way back
(docs/history/tdmpc_return.md, session 28).
"""

from __future__ import annotations

import torch

from wm_robotics.behaviors.action_bounds import Bounds
from wm_robotics.behaviors.planning import Objective, SamplingPlanner, expand_state, score_population, select_elites
from wm_robotics.models.base import FeaturePolicy, State, WorldModel


class MPPIPlanner(SamplingPlanner):
    """TD-MPC2-style MPPI inside any ``WorldModel``, batched over samples and environments.

    The std restarts at ``max_std`` every call and stays within [``min_std``, ``max_std``], both
    fractions of the half-range of the bounds. ``sample_final=True`` (TD-MPC2) returns the first
    action of an elite drawn by weight, so behaviour stays stochastic; False returns the first
    action of the weighted mean plan (smoother, deterministic given the scores). ``last_info``
    after ``plan``: ``plan`` (E, H, A) mean, ``std`` (E, H, A), ``best_score`` (E,) and
    ``elite_score`` (E,) weighted mean elite score, both of the last iteration (with ``prior_coef``, the
    scores are the regularised ones).
    """

    def __init__(self, action_dim: int, horizon: int = 3, iterations: int = 6, samples: int = 512,
                 elites: int = 64, policy_samples: int = 24, temperature: float = 0.5, min_std: float = 0.05,
                 max_std: float = 2.0, action_low: Bounds = -1.0, action_high: Bounds = 1.0,
                 objective: Objective | None = None, policy: FeaturePolicy | None = None,
                 sample_final: bool = True, cuda_graph: bool = True, precision: str = "fp32",
                 compile: bool = False, prior_coef: float = 0.0) -> None:
        super().__init__(action_dim, horizon, iterations, action_low, action_high, objective, cuda_graph, precision,
                         compile)
        if samples < 0 or policy_samples < 0:
            raise ValueError(f"samples and policy_samples must be >= 0, got {samples}, {policy_samples}")
        population = samples + (policy_samples if policy is not None else 0)
        if not 0 < elites <= population:
            raise ValueError(f"need 0 < elites <= population ({population} = samples"
                             f"{' + policy_samples' if policy is not None else ''}), got elites={elites}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 <= min_std <= max_std:
            raise ValueError(f"need 0 <= min_std <= max_std, got min_std={min_std}, max_std={max_std}")
        if prior_coef < 0:
            raise ValueError(f"prior_coef must be >= 0, got {prior_coef}")
        if prior_coef and (policy is None or policy_samples == 0):
            raise ValueError(f"prior_coef={prior_coef} pulls the search toward the policy prior's trajectories: it "
                             f"needs a policy and policy_samples > 0, got policy_samples={policy_samples}"
                             f"{' and no policy' if policy is None else ''}")
        self.samples, self.elites, self.policy_samples = samples, elites, policy_samples
        self.prior_coef = prior_coef
        self.temperature, self.min_std, self.max_std = temperature, min_std, max_std
        self.policy, self.sample_final = policy, sample_final

    def _policy_rollout(self, model: WorldModel, state: State, num_envs: int, low: torch.Tensor,
                        high: torch.Tensor) -> tuple[State, torch.Tensor] | None:
        """The policy prior's trajectories, actions clamped to the bounds: (states (E·Pπ, H, ...), actions
        (E, Pπ, H, A)), or None without a prior."""
        if self.policy is None or self.policy_samples == 0:
            return None
        states, actions = model.imagine(expand_state(state, self.policy_samples), self.horizon,
                                        policy=lambda features: self.policy(features).clamp(low, high))
        return states, actions.reshape(num_envs, self.policy_samples, self.horizon, -1)

    def _search(self, model: WorldModel, state: State, mean: torch.Tensor, low: torch.Tensor, high: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        num_envs = mean.shape[0]
        scale = (high - low) / 2  # (A,)
        std = (self.max_std * scale).expand_as(mean)  # (E, H, A)
        prior = self._policy_rollout(model, state, num_envs, low, high)  # imagined once, scored every iteration
        anchor = prior[1].mean(1, keepdim=True) if self.prior_coef else None  # (E, 1, H, A): the prior's mean plan
        for _ in range(self.iterations):
            samples = self._sample(mean, std, self.samples, low, high)  # (E, S, H, A)
            if prior is not None:
                samples = torch.cat([prior[1], samples], 1)  # (E, Pπ + S, H, A)
            scores = score_population(model, state, samples, self.objective, None if prior is None else prior[0])
            if anchor is not None:
                scores = scores - self.prior_coef * (samples - anchor).square().sum((-2, -1))
            elites, elite_scores = select_elites(samples, scores, self.elites)  # (E, K, H, A), (E, K)
            # (E, K), relative to the best score: scaled as they are, finfo.min scores (NaN rollouts) overflow to
            # -inf, and a softmax of nothing but -inf is NaN
            weights = torch.softmax(self.temperature * (elite_scores - elite_scores[:, :1]), 1)
            w = weights[..., None, None]  # (E, K, 1, 1)
            mean = (w * elites).sum(1).clamp(low, high)  # (E, H, A); clamp: rounding
            std = (w * (elites - mean.unsqueeze(1)).square()).sum(1).sqrt()
            std = std.clamp(self.min_std * scale, self.max_std * scale)
        if self.sample_final:
            pick = (weights / torch.empty_like(weights).exponential_()).argmax(1)  # (E,) Gumbel-max: no host sync
            action = elites[torch.arange(num_envs, device=pick.device), pick, 0]  # (E, A)
        else:
            action = mean[:, 0]
        info = dict(plan=mean, std=std, best_score=elite_scores[:, 0], elite_score=(weights * elite_scores).sum(1))
        return action, mean, info
