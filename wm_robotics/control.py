"""The importable controller: a trained world model + planner inside your own control loop.

    from wm_robotics import MPCController
    controller = MPCController.from_checkpoint("runs/<...>/checkpoints/latest.pt")
    controller.reset()
    action = controller.act(time_step.observation)   # raw dm_control dict, Gym Dict or flat proprio

No training code, no Hydra and no simulator are imported; it runs on CPU (or CUDA).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from wm_robotics.agent import agent_from_checkpoint
from wm_robotics.behaviors.action_bounds import to_env_units
from wm_robotics.behaviors.drift_estimate import DriftEstimate
from wm_robotics.behaviors.frame_goal import FrameGoal
from wm_robotics.behaviors.planners import PLANNERS as SAMPLING_PLANNERS, build_planner
from wm_robotics.behaviors.planning import GOAL_ENERGY_KEYS, GoalObjective, RewardObjective, goal_embedding
from wm_robotics.builders import resolve_device
from wm_robotics.checkpoint import load_checkpoint

PLANNERS = (*SAMPLING_PLANNERS, "policy")  # "policy": the learned actor alone, no search
#: ``goal_energy`` keys read by the controller, not by ``GoalObjective``: a goal given as a frame alone, offset-free MPC
CONTROLLER_GOAL_KEYS = ("from_frame", "pose_feedback", "unbounded_angles", "drift_correction")


def preset_planner(behavior: Mapping[str, Any]) -> str | None:
    """The sampling planner a checkpoint's ``behavior`` config trained with; None when it does not plan."""
    return behavior.get("planner") if behavior.get("kind") == "mpc" else None


class MPCController:
    """Maps one observation to one action (numpy float32 within the action bounds).

    ``payload``: a training checkpoint's contents, or its path (file or run folder, as ``from_checkpoint``).
    ``planner``: ``"mppi"`` (TD-MPC2 style, seeded by the learned policy, terminal value from the
    critic when the checkpoint has them), ``"cem"`` (PlaNet style) or ``"policy"`` (the learned
    actor alone, no search). A checkpoint trained with that same planner (``tdmpc_cpu``, ``planet``)
    starts from its preset's planner settings; ``planner_kwargs`` override them. ``set_goal`` switches the
    objective to reaching a goal observation, with the preset's ``behavior.goal_energy`` (``norm`` "l2" or
    "l1", ``terminal_only``, ``fields``: proprio field names to compare through the model's probe decoder
    instead of the latent, ``latent_weight``: with ``fields``, the weight of a second term comparing the
    latents too, DINO-WM's visual + proprio energy; in a ``split_latent`` JEPA only the blocks other than
    proprio's, so that the goal frame enters the energy; ``from_frame``: with ``fields``, read the goal's
    fields from its frame alone with the model's pose probe, so a goal is an image and its proprio is
    not used, ``behaviors/frame_goal.py``; ``unbounded_angles``: with ``from_frame``, the proprio dims of
    joints without limits, whose goal angle is taken on the branch nearest the current one;
    ``pose_feedback``: with ``from_frame``, subtract the probe's error on the current frame from the
    goal it read, every step; ``drift_correction``: a weight in (0, 1]: measure the model's one-step error
    in what the energy compares at every step, average it with this weight on the newest, and add h times
    the average to what is predicted h steps ahead, offset-free MPC, ``behaviors/drift_estimate.py``;
    0 or absent: off) updated by ``goal_energy``.
    """

    def __init__(self, payload: dict[str, Any] | str | Path, device: str = "auto", planner: str = "mppi",
                 goal_energy: dict[str, Any] | None = None, **planner_kwargs: Any) -> None:
        if isinstance(payload, (str, Path)):  # a checkpoint file or run folder, as from_checkpoint takes
            payload = load_checkpoint(payload, map_location="cpu")
        if planner not in PLANNERS:
            raise ValueError(f"unknown planner {planner!r}; valid planners: {PLANNERS}")
        self.device = resolve_device(device)
        self._agent = agent_from_checkpoint(payload, self.device)
        self.model, self.behavior = self._agent.model, self._agent.behavior
        self.obs_shapes = {key: tuple(shape) for key, shape in payload["obs_shapes"].items()}
        self.proprio_keys = [(name, int(size)) for name, size in payload.get("proprio_keys", [])]
        self.action_low = np.asarray(payload["action_low"], np.float32)
        self.action_high = np.asarray(payload["action_high"], np.float32)
        #: ``Physics.render`` keywords of the frames a pixel model was trained on (size, camera, render flags): pass
        #: them as ``dm_control.suite.wrappers.pixels.Wrapper(env, render_kwargs=...)``; None without pixels (and for
        #: checkpoints written before they were recorded)
        self.render_kwargs: dict[str, Any] | None = payload.get("render_kwargs")
        #: simulator steps per action the model was trained with: a raw simulator loop repeats each action this often
        self.action_repeat = int(payload["config"].get("env", {}).get("action_repeat", 1))
        self.planner_name = planner
        value = getattr(self.behavior, "value", None)
        dim = len(self.action_low)
        trained = payload["config"].get("behavior", {})
        # the discount the checkpoint's behaviour planned or learned its value with (PlaNet sums: 1.0)
        self._reward_objective = RewardObjective(float(trained.get("discount", 0.99)), value_fn=value)
        if preset_planner(trained) == planner:  # the preset's own settings first
            planner_kwargs = {**trained.get("settings", {}), **planner_kwargs}
        if planner == "policy" and planner_kwargs:
            raise ValueError(f"planner='policy' acts with the learned policy alone and takes no planner settings, "
                             f"got {sorted(planner_kwargs)}")
        self._planner_kwargs = dict(planner_kwargs)
        #: ``GoalObjective`` keywords used by ``set_goal`` (the preset's ``behavior.goal_energy``, then ``goal_energy``)
        self.goal_energy = {**(trained.get("goal_energy") or {}), **(goal_energy or {})}
        unknown = set(self.goal_energy) - GOAL_ENERGY_KEYS
        if unknown:
            raise ValueError(f"unknown goal_energy keys {sorted(unknown)}; valid keys: {sorted(GOAL_ENERGY_KEYS)}")
        self._goal_kwargs = {key: value for key, value in self.goal_energy.items()
                             if key not in CONTROLLER_GOAL_KEYS + ("fields", "latent_weight")}
        self._goal_kwargs["proprio_index"] = self._proprio_index(self.goal_energy.get("fields"))
        self._goal_kwargs.update(self._latent_term(self.goal_energy.get("latent_weight")))
        self.from_frame = bool(self.goal_energy.get("from_frame"))
        self.pose_feedback = bool(self.goal_energy.get("pose_feedback"))
        self.unbounded_angles = [int(dim) for dim in self.goal_energy.get("unbounded_angles") or []]
        self.drift_correction = float(self.goal_energy.get("drift_correction") or 0.0)
        if self.drift_correction:
            DriftEstimate((1,), self.drift_correction)  # a weight outside (0, 1] fails here
        self._check_frame_goal()
        self._frame_goal: FrameGoal | None = None
        self._drift: DriftEstimate | None = None
        #: the objective ``set_goal`` built: ``act`` moves its frame goal and drift only while it plans
        self._goal_objective: GoalObjective | None = None
        GoalObjective(torch.zeros(1), **self._goal_kwargs)  # a bad norm fails here, not at the first goal
        #: what the objective set by ``set_goal`` plans in when it reads only proprio fields: the model's
        #: proprio block alone (a ``split_dynamics`` JEPA: the same plans, without the pixel block's
        #: predictor) when no policy prior samples full latents; else None (the whole model)
        self._goal_view: tuple[Any, GoalObjective] | None = None
        if planner != "policy":
            self.planner = build_planner(planner, dim, self._reward_objective, getattr(self.behavior, "policy", None),
                                         **planner_kwargs)
        elif getattr(self.behavior, "policy", None) is None:
            raise ValueError("planner='policy' needs a checkpoint with a learned policy; this one has none")
        else:
            self.planner = None
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", planner: str = "mppi",
                        goal_energy: dict[str, Any] | None = None, **planner_kwargs: Any) -> "MPCController":
        """Load a training checkpoint (file or run folder) with ``weights_only=True``; the other arguments
        are the constructor's."""
        return cls(load_checkpoint(path, map_location="cpu"), device, planner, goal_energy, **planner_kwargs)

    @property
    def planner_settings(self) -> dict:
        """The planner's keyword settings (the preset's, then ``planner_kwargs``) as the planner holds them now:
        ``compile`` / ``cuda_graph``, when given, read False once compiling / graph capture has failed."""
        return {key: getattr(self.planner, key, value) for key, value in self._planner_kwargs.items()}

    @torch.inference_mode()
    def reset(self) -> None:
        """Start a new episode: forget the latent state and the planner's warm start."""
        self._agent.reset(1)
        self._first = True
        if self.planner is not None:
            self.planner.reset()
        if self._drift is not None:
            self._drift.reset()

    def model_observation(self, obs: Any) -> dict[str, np.ndarray]:
        """Normalise a raw dm_control dict (with ``pixels`` beside its fields for a pixels+proprio model, as
        dm_control's ``pixels.Wrapper(pixels_only=False)`` gives), a Gym ``Dict`` observation or a flat proprio
        array."""
        if hasattr(obs, "step_type") and hasattr(obs, "observation"):  # a dm_env TimeStep, not what it observed
            raise ValueError("got a dm_control TimeStep: pass its observation (time_step.observation)")
        if isinstance(obs, Mapping) and not set(self.obs_shapes) <= set(obs):
            others = set(self.obs_shapes) - {"proprio"}  # given as they are: pixels
            if "proprio" not in self.obs_shapes or "proprio" in obs or not others <= set(obs):
                raise ValueError(f"the model needs observation keys {sorted(self.obs_shapes)}, got {sorted(obs)}")
            # Checkpoints name the key order; older ones did not: then the dict's own (dm_control's) order.
            names = [name for name, _ in self.proprio_keys] or [name for name in obs if name not in self.obs_shapes]
            missing = [name for name in names if name not in obs]
            if missing:
                raise ValueError(f"a dm_control observation dict needs keys {names}, got {sorted(obs)}")
            fields = [np.asarray(obs[name], np.float32).ravel() for name in names]
            sizes = dict(self.proprio_keys)
            wrong = [f"{name!r} of size {field.size}, expected {sizes[name]}" for name, field in zip(names, fields)
                     if name in sizes and field.size != sizes[name]]
            if wrong:
                raise ValueError(f"dm_control observation fields of the wrong size: {'; '.join(wrong)}")
            obs = {**{key: obs[key] for key in self.obs_shapes if key in obs}, "proprio": np.concatenate(fields)}
        elif not isinstance(obs, Mapping):
            if set(self.obs_shapes) != {"proprio"}:
                raise ValueError(f"this model needs a dict with keys {sorted(self.obs_shapes)} (a dm_control or "
                                 "Gymnasium observation); a bare array works for proprio-only models")
            obs = {"proprio": obs}
        out = {}
        for key, shape in self.obs_shapes.items():
            value = (uint8_pixels(obs[key], "observation 'pixels'") if key == "pixels"
                     else np.asarray(obs[key], np.float32))
            if value.shape != shape:
                raise ValueError(f"observation {key!r} must have shape {shape}, got {value.shape}")
            if key != "pixels" and not np.isfinite(value).all():
                raise ValueError(f"observation {key!r} holds NaN or inf at indices "
                                 f"{np.flatnonzero(~np.isfinite(value)).tolist()}: check the sensor data")
            out[key] = np.ascontiguousarray(value[None])  # torch refuses views with negative strides
        return out

    @torch.inference_mode()
    def set_goal(self, goal_obs: Any) -> None:
        """Plan toward ``goal_obs``: the negative distance of predicted latents (or of their decoded
        ``goal_energy.fields``) to those of ``goal_obs``; with ``goal_energy.from_frame`` ``goal_obs`` is
        the goal frame (H, W, C) uint8, or a dict holding it as ``"pixels"``."""
        if self.planner is None:
            raise ValueError("set_goal needs a planner ('mppi' or 'cem'), not planner='policy'")
        kwargs, frame_goal = self._goal_kwargs, None  # nothing changes until the new goal is read
        if self.from_frame:
            index = kwargs["proprio_index"]
            goal = self.model.read_pose({"pixels": self._goal_frame(goal_obs)[None]})[0].index_select(-1, index)
            angles = torch.isin(index, self.model.pose.angles)
            unbounded = torch.isin(index, torch.tensor(self.unbounded_angles, dtype=torch.long, device=index.device))
            frame_goal = FrameGoal(goal, angles, unbounded, self.pose_feedback)
        else:
            goal = self._compared(self.encode(goal_obs))
        self._frame_goal = frame_goal
        self._drift = (DriftEstimate(goal.shape, self.drift_correction, self.device) if self.drift_correction
                       else None)
        # its own copy of the goal: act updates a frame goal in place
        self.planner.objective = GoalObjective(goal.clone(), **kwargs,
                                               drift=None if self._drift is None else self._drift.drift)
        fields_only = (kwargs["proprio_index"] is not None and kwargs.get("latent_index") is None
                       and getattr(self.planner, "policy", None) is None)
        view = self.model.proprio_view() if fields_only and hasattr(self.model, "proprio_view") else None
        self._goal_objective = self.planner.objective
        self._goal_view = None if view is None else (view, self._goal_objective)
        self.planner.reset()

    def _compared(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the goal energy compares of ``state``: its decoded fields and/or latent dims (``goal_embedding``)."""
        kwargs = self._goal_kwargs
        return goal_embedding(self.model, state, kwargs["proprio_index"], kwargs.get("latent_index"))

    def _proprio_index(self, fields: str | list[str] | None) -> torch.Tensor | None:
        """Dims of the proprio vector that hold the named fields (``goal_energy.fields``); None for none."""
        if not fields:
            return None
        fields = [fields] if isinstance(fields, str) else list(fields)
        names = [name for name, _ in self.proprio_keys]
        if "proprio" not in self.obs_shapes or not names:
            raise ValueError(f"goal_energy fields {fields} name proprio fields; this model observes "
                             f"{sorted(self.obs_shapes)} with no named proprio fields")
        unknown = [name for name in fields if name not in names]
        if unknown:
            raise ValueError(f"unknown proprio fields {unknown} in goal_energy; valid fields: {names}")
        index, start = [], 0
        for name, size in self.proprio_keys:
            if name in fields:
                index += range(start, start + size)
            start += size
        index = torch.tensor(index, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            goal_embedding(self.model, self.model.initial(1), index)  # a model without a probe fails here
        return index

    def _check_frame_goal(self) -> None:
        """Clear errors for ``goal_energy`` settings of a goal read from its frame that cannot work."""
        if not self.from_frame:
            if self.pose_feedback or self.unbounded_angles:
                raise ValueError("goal_energy.pose_feedback and unbounded_angles act on a goal read from its frame: "
                                 "they need from_frame: true")
            return
        index = self._goal_kwargs["proprio_index"]
        if index is None or "latent_index" in self._goal_kwargs or getattr(self.model, "pose", None) is None:
            raise ValueError("goal_energy.from_frame reads the goal's proprio fields from its frame: it needs fields, "
                             "no latent_weight, and a JEPA trained with model.overrides.pose_probe=true")
        fields, read = set(index.tolist()), self.model.pose.dims.tolist()
        if not fields <= set(read):
            raise ValueError(f"goal_energy.fields cover proprio dims {sorted(fields - set(read))} that the pose probe "
                             f"does not read (pose_dims {read})")
        allowed = set(self.model.pose.angles.tolist()) & fields
        if not set(self.unbounded_angles) <= allowed:
            raise ValueError(f"goal_energy.unbounded_angles {self.unbounded_angles} must be among the pose probe's "
                             f"angles that the fields cover {sorted(allowed)}")

    @property
    def goal_keys(self) -> tuple[str, ...]:
        """The observation keys ``set_goal`` reads: only ``pixels`` with ``goal_energy.from_frame``."""
        return ("pixels",) if self.from_frame else tuple(self.obs_shapes)

    def _goal_frame(self, goal_obs: Any) -> np.ndarray:
        """The goal frame of ``goal_obs`` (an image or a dict with ``"pixels"``), shape-checked."""
        if isinstance(goal_obs, Mapping) and "pixels" not in goal_obs:
            raise ValueError(f"the goal is a frame (goal_energy.from_frame): an image {self.obs_shapes['pixels']} or "
                             f"a dict holding it as 'pixels', got a dict of {sorted(goal_obs)}")
        frame = uint8_pixels(goal_obs["pixels"] if isinstance(goal_obs, Mapping) else goal_obs, "the goal frame")
        if frame.shape != self.obs_shapes["pixels"]:
            raise ValueError(f"the goal frame must have shape {self.obs_shapes['pixels']}, got {frame.shape}")
        return frame

    def _latent_term(self, weight: float | None) -> dict[str, Any]:
        """``GoalObjective`` keywords of the latent term beside the fields term (``goal_energy.latent_weight``):
        the latent dims outside the proprio block of a ``split_latent`` JEPA (all dims in other models); none without
        ``fields`` or with weight 0."""
        if not weight or self._goal_kwargs["proprio_index"] is None:
            return {}
        encoder = getattr(self.model, "encoder", None)  # a split_latent JEPA's proprio block, else None
        block = encoder.block("proprio") if hasattr(encoder, "block") and "proprio" in self.model.obs_keys else None
        dims = [d for d in range(self.model.feature_dim) if block is None or not block.start <= d < block.stop]
        return {"latent_index": torch.tensor(dims, dtype=torch.long, device=self.device),
                "latent_weight": float(weight)}

    def _frame_goal_now(self, model_obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frame goal's fields re-expressed near the measured state of ``model_obs`` (``FrameGoal.goal``)."""
        index = self._goal_kwargs["proprio_index"]
        measured = model_obs["proprio"][0].index_select(-1, index)
        read_now = (self.model.read_pose({"pixels": model_obs["pixels"]})[0].index_select(-1, index)
                    if self.pose_feedback else None)
        return self._frame_goal.goal(measured, read_now)

    @torch.inference_mode()
    def encode(self, obs: Any) -> dict[str, torch.Tensor]:
        """The model's state (batch 1) for ``obs`` seen on its own, as the first step of an episode
        (what ``set_goal`` plans toward); ``obs`` in any form ``act`` accepts."""
        model_obs = {k: torch.as_tensor(v, device=self.device) for k, v in self.model_observation(obs).items()}
        return self.model.step(self.model.initial(1), torch.zeros(1, self.model.action_dim, device=self.device),
                               model_obs, torch.ones(1, dtype=torch.bool, device=self.device))

    @torch.inference_mode()
    def act(self, obs: Any) -> np.ndarray:
        """One action (A,) float32 in the env's bounds for the current observation."""
        agent = self._agent
        model_obs = {k: torch.as_tensor(v, device=self.device) for k, v in self.model_observation(obs).items()}
        first = torch.tensor([self._first], device=self.device)
        previous, agent.state = agent.state, self.model.step(agent.state, agent.prev_action, model_obs, first)
        own_goal = self.planner is not None and self.planner.objective is self._goal_objective  # not one swapped in
        if own_goal and self._drift is not None and not self._first:
            predicted = self.model.img_step(previous, agent.prev_action)
            shape = self._drift.drift.shape  # the goal's: (F,) read from a frame, (1, F) encoded
            self._drift.update(self._compared(agent.state).reshape(shape), self._compared(predicted).reshape(shape))
        if own_goal and self._frame_goal is not None:
            # in place, so that a captured CUDA graph of the search stays valid
            self._goal_objective.goal.copy_(self._frame_goal_now(model_obs))
        if self.planner is None:
            normalised = self.behavior.policy(self.model.features(agent.state), sample=False)  # (1, A) in [-1, 1]
        elif own_goal and self._goal_view is not None:
            view = self._goal_view[0]
            normalised = self.planner.plan(view, view.restrict(agent.state))
        else:
            normalised = self.planner.plan(self.model, agent.state)
        agent.prev_action = normalised
        action = to_env_units(normalised[0].cpu().numpy(), self.action_low, self.action_high)
        self._first = False
        return np.clip(action, self.action_low, self.action_high).astype(np.float32)


def uint8_pixels(value: Any, what: str) -> np.ndarray:
    """``value`` as a contiguous uint8 image (dm_control renders flipped views, which torch refuses); a float image
    (e.g. scaled to [0, 1]) is an error, not silently truncated."""
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must hold integer pixel values 0-255 (uint8, as rendered), got dtype {array.dtype}")
    if array.dtype != np.uint8 and array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{what} must hold pixel values 0-255, got values from {array.min()} to {array.max()}")
    return np.ascontiguousarray(array, np.uint8)
