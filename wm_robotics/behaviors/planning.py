"""Shared pieces of the sampling MPC planners (CEM, MPPI): objectives, population scoring, warm start.

Shapes: E = parallel environments, P = candidate action sequences per environment, H = planning
horizon, A = action dims, F = feature dims, N = E·P scored trajectories (environment-major:
row ``e·P + p`` is candidate p of environment e). Actions are in the planner's units, bounded by
``[action_low, action_high]`` (normalised units, [-1, 1] by default, as the world model learns them).
Standard deviations are given as fractions of the half-range (high − low) / 2, so that they mean
the same for any bounds (and are absolute for [-1, 1]).

``precision``: ``"fp32"`` (default), ``"bf16"`` or ``"bf16_full"`` (``wm_robotics/precision.py``): the
model's matmuls inside the search run in bfloat16 (``bf16`` keeps its output layers, which produce
what the search ranks, in float32); sampled actions, scores and the planner's statistics stay float32.

``compile=True`` runs the search through ``torch.compile`` (inductor; needs a C++ compiler on the CPU): the
LayerNorm / SiLU / softmax steps between the matmuls are fused into a few loops, so the search comes
closer to the machine's matmul rate. The first ``plan`` compiles (about 1 min for TD-MPC2's 1M MPPI on
2 CPU cores; seconds once inductor's on-disk cache holds it), and so does the first one after a shape or
setting changes. Every planner of a kind shares one compiled code object, so torch's recompile limit
(``torch._dynamo.config.recompile_limit``, 8) counts the shapes and models of all of them together; past
it torch logs a warning and runs the search eagerly. On CUDA with ``cuda_graph`` the CUDA graph takes its
place (compiling on CUDA, with ``cuda_graph=False``, has not been tried).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator, Protocol, Sequence

import torch

from wm_robotics.behaviors.action_bounds import Bounds, bound_vectors
from wm_robotics.behaviors.cuda_graph import GraphedCall, same_capture
from wm_robotics.compiled import CompiledCall
from wm_robotics.models.base import State, WorldModel
from wm_robotics.precision import check_precision, compute_precision


class Objective(Protocol):
    """Scores imagined trajectories: ``(model, states (N, H, ...), actions (N, H, A)) -> (N,)``, higher is better.

    An objective may expose ``num_envs`` (int or None): how many environments it expects, checked
    against the state batch by :func:`score_population`. Any plain callable with this signature works.
    """

    def __call__(self, model: WorldModel, states: State, actions: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of N imagined trajectories: states (N, H, ...), actions (N, H, A)."""


class RewardObjective:
    """Σ_t γ^t · r_t over the horizon, each reward weighted by the predicted continue probabilities
    before it (when the model has a continue head), plus the discounted terminal ``value_fn(features_H)``.

    ``r_t`` is the reward predicted for the state reached after action t; ``value_fn`` maps the
    last features (N, F) to values (N,) or (N, 1) (TD-MPC2's terminal value; None to omit).
    """

    def __init__(self, discount: float = 0.99, value_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        self.discount, self.value_fn = discount, value_fn

    def __call__(self, model: WorldModel, states: State, actions: torch.Tensor) -> torch.Tensor:
        """Each trajectory's discounted predicted return (N,)."""
        features = model.features(states)  # (N, H, F)
        reward = model.predict_reward(features)
        if reward is None:
            raise ValueError(f"{type(model).__name__} has no reward head: plan toward a goal instead "
                             "(MPCController.set_goal(goal_obs), or a GoalObjective)")
        cont = model.predict_continue(features)
        step = torch.full_like(reward, self.discount) if cont is None else self.discount * cont  # (N, H)
        after = step.cumprod(-1)  # (N, H): weight of whatever comes after step t
        weights = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], -1)
        score = (weights * reward).sum(-1)  # (N,)
        if self.value_fn is not None:
            score = score + after[:, -1] * self.value_fn(features[:, -1]).reshape(score.shape)
        return score


#: keys of the ``goal_energy`` config of MPC presets (``MPCController`` turns ``fields`` into ``proprio_index``,
#: ``latent_weight`` into ``latent_index`` and reads the goal's fields from its frame with ``from_frame``,
#: ``pose_feedback`` and ``unbounded_angles``: ``behaviors/frame_goal.py``)
GOAL_ENERGY_KEYS = frozenset({"norm", "terminal_only", "fields", "latent_weight", "from_frame", "pose_feedback",
                              "unbounded_angles", "drift_correction"})


def goal_embedding(model: WorldModel, states: State, proprio_index: torch.Tensor | None = None,
                   latent_index: torch.Tensor | None = None) -> torch.Tensor:
    """What a goal energy compares (..., F): the model's features; with ``proprio_index`` those dims
    of the proprio that its (probe) decoder reads from them instead; with ``latent_index`` (also)
    those feature dims, after the decoded ones when both are given (then in float32)."""
    parts = []
    if proprio_index is not None:
        decoded = model.decode(states, ["proprio"])
        if "proprio" not in decoded:
            raise ValueError("a goal energy on proprio fields needs a model that decodes proprio: a probe decoder, "
                             "e.g. a JEPA trained with model.overrides.probe_decoder=true")
        parts.append(decoded["proprio"].index_select(-1, proprio_index))
    if proprio_index is None or latent_index is not None:
        features = model.features(states)
        parts.append(features if latent_index is None else features.index_select(-1, latent_index))
    return parts[0] if len(parts) == 1 else torch.cat([part.float() for part in parts], -1)


class GoalObjective:
    """Negative distance between predicted states and a goal embedding (V-JEPA 2-AC / DINO-WM energy).

    ``goal`` is (F,) for all environments or (E, F), one goal per environment, in the space of
    ``goal_embedding``: the latent features, or with ``proprio_index`` (long tensor) the decoded
    proprio dims it lists (e.g. joint positions only: an energy blind to velocity, as a single
    goal frame is). With both ``proprio_index`` and ``latent_index`` the energy is DINO-WM's sum of
    two terms: distance(decoded fields) + ``latent_weight`` · distance(latent dims). ``norm`` is
    "l2" (Euclidean) or "l1"; the energy is averaged over the horizon, or taken at the last step
    only when ``terminal_only``. Replace ``goal`` to plan towards a new goal. ``drift`` (the goal's
    shape): a per-step error of the model in what the energy compares (``DriftEstimate``), added h times
    to what is predicted at imagined step h = 1…H (offset-free MPC); read in place at every call, so it
    must live on the planning device.
    """

    def __init__(self, goal: torch.Tensor, norm: str = "l2", terminal_only: bool = False,
                 proprio_index: torch.Tensor | None = None, latent_index: torch.Tensor | None = None,
                 latent_weight: float = 1.0, drift: torch.Tensor | None = None) -> None:
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
        if latent_weight < 0:
            raise ValueError(f"latent_weight must be >= 0, got {latent_weight}")
        self.goal = torch.as_tensor(goal)
        if self.goal.dim() not in (1, 2):
            raise ValueError(f"goal must be (F,) or (E, F), got shape {tuple(self.goal.shape)}")
        self.norm, self.terminal_only, self.latent_weight = norm, terminal_only, float(latent_weight)
        self.proprio_index = None if proprio_index is None else torch.as_tensor(proprio_index, dtype=torch.long)
        self.latent_index = None if latent_index is None else torch.as_tensor(latent_index, dtype=torch.long)
        if drift is not None and drift.shape != self.goal.shape:
            raise ValueError(f"drift must have the goal's shape {tuple(self.goal.shape)}, got {tuple(drift.shape)}")
        self.drift = drift

    @property
    def num_envs(self) -> int | None:
        """Number of per-environment goals; None for one shared goal."""
        return self.goal.shape[0] if self.goal.dim() == 2 else None

    def __call__(self, model: WorldModel, states: State, actions: torch.Tensor) -> torch.Tensor:
        """Each trajectory's negative goal energy (N,)."""
        horizon = next(iter(states.values())).shape[1]  # states (N, H, ...)
        if self.terminal_only:
            states = {key: value[:, -1:] for key, value in states.items()}
        device = next(iter(states.values())).device
        if self.drift is not None and self.drift.device != device:  # a copy would stop seeing the updates
            raise ValueError(f"drift is on {self.drift.device} but the planner runs on {device}: make it there "
                             "(DriftEstimate(..., device=...)), it is read in place at every call")
        # moved once, in eager calls before any CUDA-graph capture
        for name in ("goal", "proprio_index", "latent_index"):
            value = getattr(self, name)
            if value is not None and value.device != device:
                setattr(self, name, value.to(device))
        features = goal_embedding(model, states, self.proprio_index, self.latent_index).float()  # (N, H, F)
        goal = self.goal.float()
        if goal.shape[-1] != features.shape[-1]:  # a (1,) goal would broadcast over every compared value
            raise ValueError(f"the goal has {goal.shape[-1]} values per environment, but the planner compares "
                             f"{features.shape[-1]} (the model's goal embedding)")
        num = features.shape[0]
        if goal.dim() == 2:
            if num % goal.shape[0]:
                raise ValueError(f"{num} trajectories cannot be split among {goal.shape[0]} goals")
            features = features.unflatten(0, (goal.shape[0], -1))  # (E, P, H, F)
            goal = goal[:, None, None]  # (E, 1, 1, F)
        if self.drift is not None:  # h x drift at imagined step h (the last step only, with terminal_only)
            steps = torch.arange(horizon - features.shape[-2] + 1, horizon + 1, device=device, dtype=torch.float32)
            features = features + steps[:, None] * self.drift.float().reshape(goal.shape)
        diff = features - goal
        if self.proprio_index is not None and self.latent_index is not None:
            fields = len(self.proprio_index)
            energy = self._distance(diff[..., :fields]) + self.latent_weight * self._distance(diff[..., fields:])
        else:
            energy = self._distance(diff)
        return -energy.reshape(num, -1).mean(-1)

    def _distance(self, diff: torch.Tensor) -> torch.Tensor:
        """L2 or L1 norm over the last dim."""
        return diff.norm(dim=-1) if self.norm == "l2" else diff.abs().sum(-1)


def batch_size(state: State) -> int:
    """The shared leading dim E of a state; ValueError when its tensors disagree."""
    sizes = {value.shape[0] for value in state.values()}
    if len(sizes) != 1:
        raise ValueError(f"state tensors must share one leading batch dim, got sizes {sorted(sizes)}")
    return sizes.pop()


def expand_state(state: State, copies: int) -> State:
    """(E, ...) → (E·copies, ...), each environment's state repeated ``copies`` times in a row."""
    return {key: value.repeat_interleave(copies, 0) for key, value in state.items()}


def score_population(model: WorldModel, state: State, actions: torch.Tensor, objective: Objective,
                     known: State | None = None) -> torch.Tensor:
    """Score candidates ``actions`` (E, P, H, A) from start states (E, ...) with ONE ``imagine`` call → (E, P).

    ``known``: the imagined states (E·K, H, ...) of the first K candidates of each environment (the policy
    prior's, the same in every iteration): only the other P − K are imagined. NaN scores become the lowest
    finite value, so a diverging rollout is never chosen.
    """
    num_envs, pop, horizon, _ = actions.shape
    expected = getattr(objective, "num_envs", None)
    if expected is not None and expected != num_envs:
        raise ValueError(f"the objective has {expected} goals but the state batch has {num_envs} environments")
    first = 0 if known is None else next(iter(known.values())).shape[0] // num_envs
    states, _ = model.imagine(expand_state(state, pop - first), horizon, actions=actions[:, first:].flatten(0, 1))
    if known is not None:  # per environment: its K known rows, then its P − K new ones
        states = {key: torch.cat([known[key].unflatten(0, (num_envs, first)), value.unflatten(0, (num_envs, -1))],
                                 1).flatten(0, 1) for key, value in states.items()}
    scores = objective(model, states, actions.flatten(0, 1)).float()  # (E·P,); float: bf16 ranking needs the digits
    return scores.reshape(num_envs, pop).nan_to_num(nan=torch.finfo(scores.dtype).min)


def select_elites(actions: torch.Tensor, scores: torch.Tensor, elites: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``elites`` per environment: (actions (E, K, H, A), scores (E, K)), best first."""
    top, index = scores.topk(elites, dim=1)  # (E, K)
    picked = actions.gather(1, index[..., None, None].expand(-1, -1, *actions.shape[2:]))
    return picked, top


def shift_plan(mean: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Warm start: drop the executed first step of ``mean`` (E, H, A) and append ``fill`` (A,) at the end."""
    return torch.cat([mean[:, 1:], fill.expand(mean.shape[0], 1, -1)], 1)


class SamplingPlanner:
    """Base of the population planners: bounds, validation, warm start across calls and ``reset``.

    Subclasses implement ``_search(model, state, mean, low, high) -> (first actions (E, A),
    final mean plan (E, H, A), info)``. The warm start keeps the previous mean plan shifted by one
    step, its new last step the middle of the bounds; it is used while the number of environments
    and the horizon stay the same, otherwise the search starts cold (from the middle of the bounds).

    On CUDA with ``cuda_graph`` the search is captured once as a CUDA graph (``GraphedCall``) and
    replayed; it is captured anew when the model, the objective or one of its attributes (a new
    ``goal``), a setting (``iterations``, ...) or the state's shapes change. If capture fails the
    planner warns once and searches eagerly. Otherwise, with ``compile``, the search runs compiled
    (``torch.compile``); if compiling fails the planner warns once and searches eagerly.
    """

    def __init__(self, action_dim: int, horizon: int, iterations: int, action_low: Bounds, action_high: Bounds,
                 objective: Objective | None, cuda_graph: bool = True, precision: str = "fp32",
                 compile: bool = False) -> None:
        if action_dim <= 0 or horizon <= 0 or iterations <= 0:
            raise ValueError(f"action_dim, horizon and iterations must be positive, got "
                             f"{action_dim}, {horizon}, {iterations}")
        self.low, self.high = bound_vectors(action_dim, action_low, action_high)
        self.action_dim, self.horizon, self.iterations = action_dim, horizon, iterations
        self.precision = check_precision(precision)
        self.objective: Objective = RewardObjective() if objective is None else objective
        self.last_info: dict[str, torch.Tensor] = {}
        self._mean: torch.Tensor | None = None  # (E, H, A) previous mean plan
        self.cuda_graph = cuda_graph
        self._graph: tuple[tuple, GraphedCall] | None = None  # (what it was captured for, the graph)
        self.compile = compile
        self._compiled: CompiledCall | None = None  # made at the first compiled search

    @torch.inference_mode()
    def plan(self, model: WorldModel, state: State) -> torch.Tensor:
        """Plan from ``state`` (E, ...) for E environments; return the actions to take now (E, A)."""
        num_envs = batch_size(state)
        device = next(iter(state.values())).device
        low, high = self.low.to(device), self.high.to(device)
        mid = (low + high) / 2
        if self._mean is not None and self._mean.shape[:2] == (num_envs, self.horizon):
            mean = shift_plan(self._mean.to(device), mid)
        else:
            mean = mid.expand(num_envs, self.horizon, -1).clone()
        with compute_precision(device, self.precision):
            if self.cuda_graph and device.type == "cuda":
                action, self._mean, self.last_info = self._graphed_search(model, state, mean, low, high)
            elif self.compile:
                action, self._mean, self.last_info = self._compiled_search(model, state, mean, low, high)
            else:
                action, self._mean, self.last_info = self._search(model, state, mean, low, high)
        return action.clamp(low, high)

    def _compiled_search(self, model: WorldModel, state: State, mean: torch.Tensor, low: torch.Tensor,
                         high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``_search`` through ``torch.compile``; eager (with a warning, once) if it cannot be compiled."""
        if self._compiled is None or not self._compiled.active:  # first use, or compile set again after a failure
            self._compiled = CompiledCall(self._search, f"{type(self).__name__}'s search",
                                          "planning without compiling from now on")
        result = self._compiled(model, state, mean, low, high)
        self.compile = self._compiled.active
        return result

    def _graphed_search(self, model: WorldModel, state: State, mean: torch.Tensor, low: torch.Tensor,
                        high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``_search`` replayed from a CUDA graph; eager (with a warning, once) if it cannot be captured."""
        keys = list(state)
        settings = [(name, value) for name, value in vars(self).items() if isinstance(value, (bool, int, float, str))]
        key = (model, self.objective, list(vars(self.objective).items()), getattr(self, "policy", None), settings,
               [(k, state[k].shape, state[k].dtype) for k in keys], mean.shape, mean.device)
        inputs = [mean, low, high, *(state[k] for k in keys)]
        if self._graph is None or not same_capture(self._graph[0], key):
            self._graph = None
            try:
                graph = GraphedCall(lambda m, lo, hi, *values: self._search(model, dict(zip(keys, values)), m, lo, hi),
                                    inputs)
            except RuntimeError as error:
                warnings.warn(f"CUDA graph capture of {type(self).__name__}'s search failed "
                              f"({error.__context__ or error}); planning without graphs from now on")
                self.cuda_graph = False
                return self._search(model, state, mean, low, high)
            self._graph = (key, graph)  # the key also keeps what it names alive while the graph reads it
        return self._graph[1](*inputs)

    @contextlib.contextmanager
    def warm_start_kept(self) -> Iterator[None]:
        """Plan inside (e.g. evaluation episodes between training steps) and leave the warm start as it was."""
        with torch.inference_mode():  # a copy: ``reset(env_ids)`` writes into the stored plan
            kept = None if self._mean is None else self._mean.clone()
        try:
            yield
        finally:
            self._mean = kept

    def reset(self, env_ids: Sequence[int] | torch.Tensor | None = None) -> None:
        """Forget the warm start: for all environments, or only ``env_ids`` (those whose episode ended). An id
        past the stored plan's environments (their number grew) forgets it all: the next plan starts cold."""
        ids = None if env_ids is None else torch.as_tensor(env_ids, dtype=torch.long).flatten()
        if ids is None or self._mean is None or (ids.numel() and int(ids.max()) >= self._mean.shape[0]):
            self._mean = None
            return
        with torch.inference_mode():  # the stored plan is an inference tensor
            self._mean[ids] = ((self.low + self.high) / 2).to(self._mean.device)

    def _search(self, model: WorldModel, state: State, mean: torch.Tensor, low: torch.Tensor, high: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError("_search must return (actions (E, A), mean plan (E, H, A), info)")

    @staticmethod
    def _sample(mean: torch.Tensor, std: torch.Tensor, count: int, low: torch.Tensor, high: torch.Tensor
                ) -> torch.Tensor:
        """``count`` Gaussian sequences per environment around mean/std (E, H, A), clipped → (E, count, H, A)."""
        noise = torch.randn(mean.shape[0], count, *mean.shape[1:], device=mean.device, dtype=mean.dtype)
        return (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(low, high)
