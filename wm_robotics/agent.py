"""The deployable agent: a world model filters observations, a behaviour picks actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from wm_robotics.behaviors.planning import batch_size
from wm_robotics.models.base import State, WorldModel


class Agent:
    """Acts on batches of env observations (one row per parallel env), in env action units.

    Keeps one latent state and previous action per env; ``is_first`` marks envs whose episode
    just started (their state and previous action are reset inside the model). A behaviour with
    ``plan(model, state, is_first, sample)`` (a planner) acts through it, others through
    ``policy(features, sample)``; both return normalised actions. With ``obs_shapes`` ({key: shape of
    one env's observation}) ``act`` checks each observation's shape against it.
    """

    def __init__(self, model: WorldModel, behavior: torch.nn.Module, device: torch.device,
                 obs_shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        self.model, self.behavior, self.device = model, behavior, device
        self.obs_shapes = obs_shapes
        self.state: State | None = None
        self.prev_action: torch.Tensor | None = None

    def reset(self, num_envs: int) -> None:
        """Forget every env's latent state (call at the start of a batch of episodes)."""
        self.state = self.model.initial(num_envs)
        self.prev_action = torch.zeros(num_envs, self.model.action_dim, device=self.device)

    @torch.inference_mode()
    def act(self, obs: dict[str, np.ndarray], is_first: np.ndarray, sample: bool = True) -> np.ndarray:
        """Batched observation dict (N, ...) → actions (N, A) float32 within the env bounds."""
        if self.state is None:
            self.reset(len(is_first))
        if batch_size(self.state) != len(is_first):
            raise ValueError(f"is_first has {len(is_first)} envs but the agent holds states for "
                             f"{batch_size(self.state)}: call reset({len(is_first)}) when the number of envs changes")
        self._check(obs, len(is_first))
        model_obs = {key: torch.as_tensor(obs[key], device=self.device) for key in self.model.obs_keys}
        first = torch.as_tensor(is_first, device=self.device, dtype=torch.bool)
        self.state = self.model.step(self.state, self.prev_action, model_obs, first)
        plan = getattr(self.behavior, "plan", None)  # planners act from the full state
        action = (plan(self.model, self.state, first, sample) if plan is not None
                  else self.behavior.policy(self.model.features(self.state), sample=sample))  # normalised
        self.prev_action = action
        return self.behavior.to_env(action).cpu().numpy().astype(np.float32)

    def _check(self, obs: dict[str, np.ndarray], num_envs: int) -> None:
        """ValueError saying what was expected when ``obs`` lacks a key or is not one row per env, or where a float
        observation holds NaN or inf (it would reach the model's state and the behaviour's distributions)."""
        missing = [key for key in self.model.obs_keys if key not in obs]
        if missing:
            raise ValueError(f"obs needs keys {list(self.model.obs_keys)}, got {sorted(obs)}")
        shapes = {key: tuple(np.shape(obs[key])) for key in self.model.obs_keys}
        expected = {key: (num_envs, *(self.obs_shapes or {}).get(key, shape[1:])) for key, shape in shapes.items()}
        if shapes != expected:
            raise ValueError(f"obs must hold one row per env ({num_envs}, as is_first): shapes {expected}, "
                             f"got {shapes}")
        for key in self.model.obs_keys:
            value = np.asarray(obs[key])
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                envs = sorted({int(env) for env in np.argwhere(~np.isfinite(value))[:, 0]})
                raise ValueError(f"observation {key!r} holds NaN or inf (envs {envs}): the simulator or a sensor "
                                 "returned it; the model cannot act on it")


def agent_from_checkpoint(payload: dict, device: torch.device) -> Agent:
    """Rebuild the agent of a training checkpoint (read with ``load_checkpoint``)."""
    from wm_robotics.builders import build_behavior, build_world_model

    cfg = payload["config"]
    shapes = {key: tuple(shape) for key, shape in payload["obs_shapes"].items()}
    low, high = np.asarray(payload["action_low"], np.float32), np.asarray(payload["action_high"], np.float32)
    model = build_world_model(cfg["model"], shapes, len(low)).to(device)
    behavior = build_behavior(cfg["behavior"], model, gym.spaces.Box(low, high, dtype=np.float32)).to(device)
    model.load_state_dict(payload["model"])
    # acting needs the weights only: optimiser and search states are for training (``Trainer.restore``),
    # and one from another model version must not stop a checkpoint from acting
    behavior.load_state_dict(payload["behavior"]["module"])
    model.eval()
    behavior.eval()
    return Agent(model, behavior, device, shapes)


def check_task(payload: dict, env: gym.Env, task: str, checkpoint: str = "the checkpoint") -> None:
    """ValueError naming both sides when ``env``'s observation or action shapes differ from the checkpoint's."""
    from wm_robotics.builders import obs_shapes

    trained = {key: tuple(shape) for key, shape in payload["obs_shapes"].items()}
    trained_actions = len(payload["action_low"])
    given, given_actions = obs_shapes(env.observation_space), env.action_space.shape[0]
    if trained != given or trained_actions != given_actions:
        raise ValueError(
            f"task {task} does not fit {checkpoint}: it was trained on {payload['config']['env']['id']} "
            f"(observations {trained}, {trained_actions} action dims) but task {task!r} has observations "
            f"{given}, {given_actions} action dims; use a task with the same shapes, or leave task unset "
            "for the checkpoint's own")
