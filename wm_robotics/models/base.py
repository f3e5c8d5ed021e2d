"""The ``WorldModel`` seam: what every world model (RSSM, JEPA, MDN-RNN) implements.

Shapes: B = batch, T = sequence length, H = imagination horizon, A = action dims.
A *state* is a dict of tensors that share leading dims (``(B, ...)`` for one step,
``(B, T, ...)`` for a sequence); ``features(state)`` flattens it into the vector that heads,
actors, critics and planners read.

Batches follow the Dreamer convention, aligned with observations: ``obs/<key>`` (B, T, ...),
``action`` (B, T, A) is the action that *led to* each observation (zeros on the first step of
an episode), ``reward`` (B, T) the reward received on arriving there, ``is_first`` (B, T)
marks episode starts and ``is_terminal`` (B, T) true terminations (not time limits).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Self, Sequence

import torch
from torch import nn

from wm_robotics.precision import in_compute_dtype

State = dict[str, torch.Tensor]
#: Maps features (..., F) to actions (..., A); used to roll a model forward under a policy.
FeaturePolicy = Callable[[torch.Tensor], torch.Tensor]


def stack_states(states: list[State]) -> State:
    """Stack per-step states (B, ...) along a new time dim → (B, T, ...)."""
    return {key: torch.stack([s[key] for s in states], 1) for key in states[0]}


def loss_metrics(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """A loss's scalar statistics as floats, read from the device in one sync.

    Call it last in a ``loss``, after every tensor operation: under ``torch.compile`` the sync ends the
    compiled graph, and tensor work after it would run in a frame compiled anew for every new value of the
    floats (a recompile at each update, until torch's recompile limit).
    """
    values = torch.stack([value.detach().float() for value in stats.values()]).tolist()
    return dict(zip(stats, values))


class WorldModel(nn.Module):
    """Interface of a learned world model; see the module docstring for shapes."""

    #: observation keys the model reads, e.g. ("pixels",), ("proprio",) or both.
    obs_keys: tuple[str, ...]
    action_dim: int
    feature_dim: int
    #: size presets: name → constructor arguments (see :meth:`from_size`).
    SIZES: dict[str, dict[str, int]] = {}
    #: independent replay steps wanted per update besides the sequences (the Trainer adds them to
    #: the batch as ``frames/<key>``); 0 = none.
    frames_per_update: int = 0

    @classmethod
    def from_size(cls, size: str, obs_shapes: dict[str, tuple], action_dim: int, **overrides: Any) -> Self:
        """Build a preset size (a key of ``SIZES``); ``overrides`` replace any constructor argument."""
        if size not in cls.SIZES:
            raise ValueError(f"unknown {cls.__name__} size {size!r}; valid sizes: {', '.join(cls.SIZES)}")
        valid = sorted(set(inspect.signature(cls).parameters) - {"obs_shapes", "action_dim"})
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} overrides {unknown} (model.overrides); valid: {valid}")
        return cls(obs_shapes, action_dim, **{**cls.SIZES[size], **overrides})

    def _tensor(self, x, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``x`` as a tensor on the model's device (``dtype`` when given)."""
        return torch.as_tensor(x, device=next(self.parameters()).device, dtype=dtype)

    def _obs(self, obs: dict) -> dict[str, torch.Tensor]:
        """Model-side observations: pixels keep uint8 (converted in the encoder), proprio float."""
        return {key: self._tensor(obs[key], None if key == "pixels" else torch.float32) for key in self.obs_keys}

    def initial(self, batch_size: int) -> State:
        """The state before any observation: ``(batch_size, ...)`` tensors."""
        raise NotImplementedError("initial(batch_size) must return a State with leading dim batch_size")

    def observe(self, obs: dict[str, torch.Tensor], action: torch.Tensor, is_first: torch.Tensor,
                state: State | None = None) -> tuple[State, State]:
        """Filter a batch of sequences; return (posterior states (B, T, ...), last state (B, ...))."""
        raise NotImplementedError("observe(...) must return (states with dims (B, T, ...), last state (B, ...))")

    def step(self, state: State, action: torch.Tensor, obs: dict[str, torch.Tensor],
             is_first: torch.Tensor) -> State:
        """One filtering step for acting: previous state + action that led to ``obs`` → new state."""
        raise NotImplementedError("step(...) must return the posterior State (B, ...) after obs")

    def img_step(self, state: State, action: torch.Tensor) -> State:
        """One imagined step: state (B, ...) + action (B, A) → the predicted next state (B, ...)."""
        raise NotImplementedError("img_step(state, action) must return the next State (B, ...)")

    def imagine(self, state: State, horizon: int, actions: torch.Tensor | None = None,
                policy: FeaturePolicy | None = None) -> tuple[State, torch.Tensor]:
        """Roll ``horizon`` steps of :meth:`img_step` from ``state`` under ``actions`` (B, H, A) or a ``policy``.

        Returns (imagined states (B, H, ...), the actions used (B, H, A)); the state at index
        h is the one reached *after* action h. Batched: no Python loop over B.
        """
        if (actions is None) == (policy is None):
            raise ValueError("imagine needs exactly one of `actions` (B, H, A) or `policy`")
        if actions is not None and actions.shape[1] != horizon:
            raise ValueError(f"actions cover {actions.shape[1]} steps, horizon is {horizon}")
        actions = None if actions is None else self._tensor(actions, torch.float32)
        states, used = [], []
        for t in range(horizon):
            action = actions[:, t] if actions is not None else policy(self.features(state))
            state = self.img_step(state, action)
            states.append(state)
            used.append(action)
        return stack_states(states), torch.stack(used, 1)

    def imagine_features(self, state: State, horizon: int, policy: FeaturePolicy) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of ``state`` and of ``horizon`` states imagined under ``policy``: (B, H+1, F), index 0 the
        start, and the actions used (B, H, A).

        What a learner in imagination reads: each state's features are computed once, serve the policy,
        and are stacked in the compute dtype under autocast (:func:`~wm_robotics.precision.in_compute_dtype`),
        which halves the largest tensor of a bf16 update; the states themselves are not stacked.
        Differentiable like :meth:`imagine`, with the same draws.
        """
        current = self.features(state)
        features, used = [in_compute_dtype(current)], []
        for _ in range(horizon):
            used.append(policy(current))
            state = self.img_step(state, used[-1])
            current = self.features(state)
            features.append(in_compute_dtype(current))
        return torch.stack(features, 1), torch.stack(used, 1)

    def features(self, state: State) -> torch.Tensor:
        """Flatten a state into features (..., feature_dim)."""
        raise NotImplementedError("features(state) must return a (..., feature_dim) tensor")

    def predict_reward(self, features: torch.Tensor) -> torch.Tensor | None:
        """Predicted reward (...) for arriving in the state; None when the model has no reward head."""
        return None

    def predict_continue(self, features: torch.Tensor) -> torch.Tensor | None:
        """Probability (...) that the episode continues; None when the model has no continue head."""
        return None

    def decode(self, state: State, keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Reconstructed observations from a state (only ``keys`` when given); empty without a decoder."""
        return {}

    def after_step(self) -> None:
        """Called by the trainer after each optimiser step (e.g. to move EMA target networks)."""

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], State]:
        """Training loss on a batch: (scalar, named metrics, posterior states (B, T, ...) detached)."""
        raise NotImplementedError("loss(batch) must return (scalar tensor, metrics dict, posterior states)")
