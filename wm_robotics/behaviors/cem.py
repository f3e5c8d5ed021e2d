"""Cross-entropy method planner (PlaNet; V-JEPA 2-AC and DINO-WM with a GoalObjective).

Each iteration samples ``candidates`` action sequences per environment from a diagonal Gaussian,
scores them in the world model, and refits the Gaussian to the top ``elites``. The first action of
the final mean plan is executed; the mean (shifted by one step) warm-starts the next call.
"""

from __future__ import annotations

import torch

from wm_robotics.behaviors.action_bounds import Bounds
from wm_robotics.behaviors.planning import Objective, SamplingPlanner, score_population, select_elites
from wm_robotics.models.base import State, WorldModel


class CEMPlanner(SamplingPlanner):
    """CEM over action sequences inside any ``WorldModel``, batched over candidates and environments.

    ``init_std`` (reset every call, also when warm-started) and ``min_std`` are fractions of the
    half-range of the bounds. ``momentum`` blends the old mean/std into each refit (0 = plain CEM).
    ``last_info`` after ``plan``: ``plan`` (E, H, A) elite mean, ``std`` (E, H, A), ``best_score``
    (E,) and ``elite_score`` (E,) mean elite score, both of the last iteration.
    """

    def __init__(self, action_dim: int, horizon: int = 12, iterations: int = 10, candidates: int = 1000,
                 elites: int = 100, min_std: float = 0.05, init_std: float = 1.0, action_low: Bounds = -1.0,
                 action_high: Bounds = 1.0, objective: Objective | None = None, momentum: float = 0.0,
                 cuda_graph: bool = True, precision: str = "fp32", compile: bool = False) -> None:
        super().__init__(action_dim, horizon, iterations, action_low, action_high, objective, cuda_graph, precision,
                         compile)
        if not 0 < elites <= candidates:
            raise ValueError(f"need 0 < elites <= candidates, got elites={elites}, candidates={candidates}")
        if not 0 <= min_std <= init_std:
            raise ValueError(f"need 0 <= min_std <= init_std, got min_std={min_std}, init_std={init_std}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.candidates, self.elites = candidates, elites
        self.min_std, self.init_std, self.momentum = min_std, init_std, momentum

    def _search(self, model: WorldModel, state: State, mean: torch.Tensor, low: torch.Tensor, high: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        scale = (high - low) / 2  # (A,)
        std = (self.init_std * scale).expand_as(mean)  # (E, H, A)
        for _ in range(self.iterations):
            samples = self._sample(mean, std, self.candidates, low, high)  # (E, P, H, A)
            scores = score_population(model, state, samples, self.objective)  # (E, P)
            elites, elite_scores = select_elites(samples, scores, self.elites)  # (E, K, H, A), (E, K)
            mean = torch.lerp(elites.mean(1), mean, self.momentum).clamp(low, high)  # clamp: rounding
            std = torch.lerp(elites.std(1, correction=0), std, self.momentum).clamp(min=self.min_std * scale)
        info = dict(plan=mean, std=std, best_score=elite_scores[:, 0], elite_score=elite_scores.mean(1))
        return mean[:, 0], mean, info
