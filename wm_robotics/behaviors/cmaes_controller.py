"""C of World Models (Ha & Schmidhuber 2018): a linear controller evolved by CMA-ES inside the dream.

Action (normalised units) = tanh(W · features + b), with features = [z, h] for the MDN-RNN (any
``WorldModel``'s features work). Each generation, ``population`` candidate (W, b) vectors from
the ``cma`` package's CMA-ES plus the current mean are scored on ``rollouts`` imagined
trajectories of ``horizon`` steps each, all from the same start states (drawn from the
posterior states of the training batch), in ONE batched ``model.imagine`` call: the
(population + 1) · rollouts trajectories share the batch dimension and each candidate's weights
apply through a batched matmul. A rollout's return is the reward summed along the dream, each
reward weighted by the predicted continue probabilities before it (``RewardObjective``).
The deployed policy is the CMA-ES mean.

Checkpoints hold the CMA-ES state as tensors and numbers (``weights_only``-safe) and resume it
exactly; see ``CMA_FIELDS``.
"""

from __future__ import annotations

import math
from typing import Any

import cma
import numpy as np
import torch

from wm_robotics.behaviors.action_bounds import ActionBounds, Bounds
from wm_robotics.behaviors.planning import RewardObjective
from wm_robotics.models.base import FeaturePolicy, State, WorldModel

#: The evolving state of ``cma.CMAEvolutionStrategy`` (attribute paths, cma 3.3-4.x); with these and
#: the sampler's RNG state a restored strategy continues as it would have (exactly in
#: tests/test_cmaes_controller.py, but for an ulp of sigma with mirrored samples; within ~1e-11 over tens of
#: generations of larger problems). With ``CMA_diagonal`` the sampler has no ``sm.*`` matrices: the covariance is
#: ``sigma_vec.scaling``.
CMA_FIELDS = ("mean", "sigma", "pc", "pc_neg", "countiter", "countevals", "sm.C", "sm.B", "sm.D", "sm.count_tell",
              "sm.last_update", "sm.count_eigen", "adapt_sigma.ps", "adapt_sigma.is_initialized",
              "adapt_sigma._ps_updated_iteration", "adapt_sigma.delta", "sigma_vec.scaling")
#: lists of vectors ``cma`` carries from one generation to the next: with a population under 6, the mirrored
#: samples the next ``ask`` injects (saved as (k, n) tensors; checkpoints before session 60 lack them)
CMA_LISTS = ("pop_injection_directions",)


def linear_policy(weight: torch.Tensor, bias: torch.Tensor) -> FeaturePolicy:
    """Policy for P candidates at once: features (P·R, F), candidate-major → tanh(W_p f + b_p) (P·R, A).

    ``weight`` (P, A, F), ``bias`` (P, A); one batched matmul, no loop over candidates.
    """
    def act(features: torch.Tensor) -> torch.Tensor:
        per_candidate = features.reshape(weight.shape[0], -1, features.shape[-1])  # (P, R, F)
        return torch.tanh(torch.baddbmm(bias.unsqueeze(1), per_candidate, weight.transpose(1, 2))).flatten(0, 1)
    return act


def expand_starts(start: State, candidates: int) -> State:
    """R start states (R, ...) → the same R for each of P candidates, candidate-major (P·R, ...)."""
    return {key: value.repeat(candidates, *([1] * (value.dim() - 1))) for key, value in start.items()}


@torch.no_grad()
def dream_returns(model: WorldModel, start: State, weight: torch.Tensor, bias: torch.Tensor, horizon: int,
                  discount: float = 1.0) -> torch.Tensor:
    """Returns (P, R) of P linear controllers (``weight`` (P, A, F), ``bias`` (P, A)), each dreamed from
    the R start states ``start`` (R, ...), all P·R trajectories in one ``imagine`` call."""
    states, actions = model.imagine(expand_starts(start, weight.shape[0]), horizon, policy=linear_policy(weight, bias))
    return RewardObjective(discount)(model, states, actions).reshape(weight.shape[0], -1)


def _get(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def _put(obj: Any, path: str, value: Any) -> None:
    *parents, name = path.split(".")
    setattr(_get(obj, ".".join(parents)) if parents else obj, name, value)


def _fields(es: cma.CMAEvolutionStrategy) -> list[str]:
    """The ``CMA_FIELDS`` that ``es`` has (a diagonal strategy's sampler has no matrices)."""
    def has(path: str) -> bool:
        try:
            _get(es, path)
        except AttributeError:
            return False
        return True
    return [path for path in CMA_FIELDS if has(path)]


def cma_state(es: cma.CMAEvolutionStrategy) -> dict[str, Any]:
    """``CMA_FIELDS`` of ``es`` (those it has) as float64 tensors and plain numbers, ``CMA_LISTS`` as tensors."""
    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.astype(np.float64, copy=True))
        return value.item() if isinstance(value, np.generic) else value
    lists = {name: torch.from_numpy(np.asarray(getattr(es, name), np.float64).reshape(-1, es.N))
             for name in CMA_LISTS if hasattr(es, name)}
    return {**{path: plain(_get(es, path)) for path in _fields(es)}, **lists}


def load_cma_state(es: cma.CMAEvolutionStrategy, state: dict[str, Any]) -> None:
    """Restore what :func:`cma_state` saved into a strategy built with the same settings."""
    kinds = {True: "full-covariance", False: "diagonal"}
    if ("sm.C" in state) != ("sm.C" in _fields(es)):  # a diagonal sampler has no matrices
        raise ValueError(f"the saved CMA-ES is {kinds['sm.C' in state]}, this one {kinds['sm.C' in _fields(es)]}: "
                         "behavior.diagonal cannot change when a run resumes")
    missing = [path for path in _fields(es) if path not in state]
    if missing:
        raise ValueError(f"CMA-ES state lacks {missing}; it was saved by another version of this controller")
    if state["countiter"] == 0:  # saved before its first generation: a fresh strategy is that state
        if es.countiter:
            raise ValueError("a CMA-ES state saved before its first generation loads into a fresh strategy only")
        return
    if es.countiter == 0:  # cma creates some bookkeeping lazily: one throwaway generation builds it
        candidates = es.ask()
        es.tell(candidates, [float(i) for i in range(len(candidates))])
    for path in _fields(es):
        value = state[path]
        _put(es, path, value.cpu().numpy().copy() if isinstance(value, torch.Tensor) else value)
    for name in CMA_LISTS:
        if name in state:
            setattr(es, name, [row.numpy().copy() for row in state[name].cpu()])
    if hasattr(es.sm, "C"):  # cma keeps aliases of the sampler's matrices
        es.C, es.B, es.D = es.sm.C, es.sm.B, es.sm.D


class CMAESController(ActionBounds):
    """Linear controller on features, evolved with CMA-ES in the world model's dream.

    ``update(model, posterior)`` (called by the Trainer after every world-model step) skips the
    first ``warmup`` calls (model-only updates), then runs ``generations`` CMA-ES generations on
    every ``every``-th call. ``policy`` acts with the CMA-ES mean, plus Gaussian ``action_noise``
    (normalised units) when sampling, for exploration while collecting.
    """

    def __init__(self, feature_dim: int, action_dim: int, action_low: Bounds = -1.0, action_high: Bounds = 1.0,
                 population: int = 32, rollouts: int = 8, horizon: int = 100, generations: int = 1,
                 sigma: float = 0.1, discount: float = 1.0, every: int = 1, warmup: int = 0,
                 action_noise: float = 0.0, diagonal: bool = False, seed: int | None = None) -> None:
        super().__init__(action_dim, action_low, action_high)
        for name, value in (("population", population), ("rollouts", rollouts), ("horizon", horizon),
                            ("generations", generations), ("every", every)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if population < 2:
            raise ValueError(f"population must be at least 2 for CMA-ES, got {population}")
        if sigma <= 0 or not 0 < discount <= 1 or warmup < 0 or action_noise < 0:
            raise ValueError(f"need sigma > 0, 0 < discount <= 1, warmup >= 0, action_noise >= 0; got sigma={sigma}, "
                             f"discount={discount}, warmup={warmup}, action_noise={action_noise}")
        self.feature_dim, self.action_dim = feature_dim, action_dim
        self.population, self.rollouts, self.horizon, self.generations = population, rollouts, horizon, generations
        self.discount, self.every, self.warmup, self.action_noise = discount, every, warmup, action_noise
        self.register_buffer("weight", torch.zeros(action_dim, feature_dim))
        self.register_buffer("bias", torch.zeros(action_dim))
        seed = int(torch.randint(2**62, ())) if seed is None else seed
        self.generator = torch.Generator().manual_seed(seed)
        self.es = cma.CMAEvolutionStrategy(np.zeros(self.num_params), sigma, {
            "popsize": population, "seed": math.nan, "verbose": -9, "CMA_diagonal": diagonal,
            "randn": lambda lam, n: torch.randn(lam, n, generator=self.generator, dtype=torch.float64).numpy()})
        self.updates_seen = 0
        self.last_metrics: dict[str, float] = {"cmaes/generation": 0.0}

    @property
    def num_params(self) -> int:
        """Length of the evolved vector: A·F weights then A biases."""
        return self.action_dim * (self.feature_dim + 1)

    def unflatten(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, num_params) vectors → (weight (P, A, F), bias (P, A))."""
        if params.shape[-1] != self.num_params:
            raise ValueError(f"parameter vectors must have {self.num_params} entries, got {params.shape[-1]}")
        split = self.action_dim * self.feature_dim
        return params[:, :split].reshape(-1, self.action_dim, self.feature_dim), params[:, split:]

    # --- acting ---------------------------------------------------------------------------
    def policy(self, features: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Actions (..., A) in normalised [-1, 1] units from features (..., F)."""
        action = torch.tanh(features @ self.weight.T + self.bias)
        if sample and self.action_noise > 0:
            action = (action + self.action_noise * torch.randn_like(action)).clamp(-1.0, 1.0)
        return action

    # --- learning -------------------------------------------------------------------------
    def _starts(self, model: WorldModel, start_state: State) -> State:
        """``rollouts`` start states drawn (with this controller's RNG) from states with any leading dims."""
        lead = model.features(start_state).dim() - 1
        flat = {key: value.detach().reshape(-1, *value.shape[lead:]) for key, value in start_state.items()}
        count = next(iter(flat.values())).shape[0]
        index = torch.randint(count, (self.rollouts,), generator=self.generator)
        return {key: value[index.to(value.device)] for key, value in flat.items()}

    def evolve(self, model: WorldModel, start_state: State, generations: int | None = None) -> dict[str, float]:
        """Run ``generations`` (default ``self.generations``) CMA-ES generations in the dream; metrics of the last."""
        for _ in range(self.generations if generations is None else generations):
            start = self._starts(model, start_state)
            candidates = np.asarray(self.es.ask())  # (P, n) float64
            params = torch.as_tensor(np.concatenate([candidates, self.es.mean[None]]), dtype=torch.float32,
                                     device=self.weight.device)
            returns = dream_returns(model, start, *self.unflatten(params), self.horizon, self.discount).mean(1)
            scores = returns.tolist()
            self.es.tell(list(candidates), [-score for score in scores[:-1]])  # cma minimises
            self.last_metrics = {"cmaes/generation": float(self.es.countiter), "cmaes/sigma": float(self.es.sigma),
                                 "dream/return_mean": float(np.mean(scores[:-1])),
                                 "dream/return_best": float(max(scores[:-1])), "dream/return_center": scores[-1]}
        mean = torch.as_tensor(self.es.mean, dtype=torch.float32, device=self.weight.device)
        weight, bias = self.unflatten(mean[None])
        self.weight.copy_(weight[0])
        self.bias.copy_(bias[0])
        return dict(self.last_metrics)

    def update(self, model: WorldModel, start_state: State) -> dict[str, float]:
        """The Trainer's hook after each world-model step: evolve when due (see the class docstring)."""
        self.updates_seen += 1
        due = self.updates_seen > self.warmup and (self.updates_seen - self.warmup - 1) % self.every == 0
        return self.evolve(model, start_state) if due else dict(self.last_metrics)

    # --- checkpointing --------------------------------------------------------------------
    def full_state_dict(self) -> dict[str, Any]:
        """Policy weights, CMA-ES state, the sampler's RNG state and counters (``weights_only``-safe)."""
        return {"module": self.state_dict(), "cma": cma_state(self.es), "rng": self.generator.get_state(),
                "updates_seen": self.updates_seen, "last_metrics": dict(self.last_metrics)}

    def load_full_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything saved by :meth:`full_state_dict`; evolution continues where it stopped."""
        if state["cma"]["mean"].numel() != self.num_params:  # checked first: load_state_dict's error says less
            raise ValueError(f"the saved CMA-ES evolves {state['cma']['mean'].numel()} parameters, this controller "
                             f"{self.num_params} (feature_dim {self.feature_dim}, action_dim {self.action_dim})")
        self.load_state_dict(state["module"])
        load_cma_state(self.es, state["cma"])
        self.generator.set_state(state["rng"].cpu())
        self.updates_seen = int(state["updates_seen"])
        self.last_metrics = dict(state["last_metrics"])
