"""dm_control suite tasks as Gymnasium environments (pixels and/or proprioception).

The hot path steps the task and physics directly (``before_step`` → ``physics.step`` →
``after_step`` → ``get_reward`` per repeated step, exactly as ``control.Environment.step``
does) and builds the observation once per *agent* step, so action repeat costs no extra
observation or rendering work.

Proprio layout: the task's observation dict, in the key order of its
``observation_spec()``, each array flattened row-major and concatenated (see
:attr:`DMCEnv.proprio_keys` for the keys and their slices).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_robotics.checks import positive_int
from wm_robotics.envs.rendering import configure_rendering, physics_render_kwargs, render_frame

configure_rendering()

from dm_control import suite  # noqa: E402  (MUJOCO_GL must be chosen first)

if TYPE_CHECKING:
    from dm_control.mujoco import Physics

OBS_MODES = ("proprio", "pixels", "pixels+proprio")
#: dm_control suite episodes last 1000 control steps; the agent sees 1000 / action_repeat.
SUITE_EPISODE_STEPS = 1000
#: Camera per domain, as in DreamerV3 / DrQ; every other domain uses camera 0.
DEFAULT_CAMERA = {"quadruped": 2}


class EpisodeStateError(RuntimeError):
    """``step`` was called before ``reset`` or after the episode ended."""


class DMCEnv(gym.Env):
    """A dm_control suite task as a Gymnasium env with a ``Dict`` observation space.

    Args:
        domain, task: a dm_control suite task, e.g. ``("cartpole", "swingup")``.
        obs_mode: ``"proprio"``, ``"pixels"`` or ``"pixels+proprio"``.
        action_repeat: physics control steps per agent step; rewards are summed.
        image_size: side of the square ``pixels`` frame.
        camera_id: MuJoCo camera (index, or name in the model) for ``pixels`` and ``render()``; task default
            when None.
        time_limit: the env's own time limit in agent steps (``truncated=True`` when hit,
            then ``step`` refuses until ``reset``); default ``ceil(1000 / action_repeat)``,
            the suite's 1000 control steps (the last agent step repeats its action only up to
            control step 1000 when ``action_repeat`` does not divide it). ``gymnasium.make(..., max_episode_steps=N)``
            adds Gymnasium's ``TimeLimit`` of N agent steps on top (use it to shorten
            episodes; pass ``time_limit`` for episodes longer than the suite's).
        render_fast: turn off shadows and reflections (≈3× faster on CPU; images differ
            from the standard suite images that published pixel results use).
        render_mode: ``"rgb_array"`` or None.

    Actions outside the action space (including NaN/inf) are refused with a ``ValueError``,
    never clipped silently. ``info["control_steps"]`` is the number of control steps the last
    ``step`` applied (0 after ``reset``): ``action_repeat``, fewer when the episode ended inside it.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}  # per instance: agent steps per simulated second

    def __init__(
        self,
        domain: str,
        task: str,
        obs_mode: str = "proprio",
        action_repeat: int = 2,
        image_size: int = 64,
        camera_id: int | None = None,
        time_limit: int | None = None,
        render_fast: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.action_repeat = positive_int("action_repeat", action_repeat)
        self.image_size = positive_int("image_size", image_size)
        suite_length = time_limit is None
        if suite_length:
            time_limit = math.ceil(SUITE_EPISODE_STEPS / self.action_repeat)
        self.time_limit = positive_int("time_limit", time_limit)
        #: control steps an episode lasts at most: the suite's 1000, or ``time_limit`` whole agent steps
        self._control_limit = SUITE_EPISODE_STEPS if suite_length else self.time_limit * self.action_repeat
        self.domain, self.task_name, self.obs_mode = domain, task, obs_mode
        self.render_fast, self.render_mode = bool(render_fast), render_mode

        self._dm_env = suite.load(domain, task, environment_kwargs={"flat_observation": False})
        self._task, self._physics = self._dm_env.task, self._dm_env.physics
        self._n_sub_steps = self._dm_env._n_sub_steps
        # one rendered frame per agent step: RecordVideo and friends play at the simulated speed
        self.metadata = {**self.metadata,
                         "render_fps": 1.0 / (self._dm_env.control_timestep() * self.action_repeat)}
        offscreen = self._physics.model.vis.global_
        if self.image_size > min(offscreen.offwidth, offscreen.offheight):
            raise ValueError(f"image_size must be at most {min(offscreen.offwidth, offscreen.offheight)} for "
                             f"{domain}-{task} (its offscreen buffer is {offscreen.offwidth}×{offscreen.offheight}), "
                             f"got {self.image_size}")
        self.camera_id = DEFAULT_CAMERA.get(domain, 0) if camera_id is None else self._camera_index(camera_id)

        self.proprio_keys: dict[str, slice] = {}
        start = 0
        for key, spec in self._dm_env.observation_spec().items():
            size = int(np.prod(spec.shape))
            self.proprio_keys[key] = slice(start, start + size)
            start += size
        self._proprio_dim = start

        obs_spaces: dict[str, spaces.Space] = {}
        if "pixels" in obs_mode:
            obs_spaces["pixels"] = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        if "proprio" in obs_mode:
            obs_spaces["proprio"] = spaces.Box(-np.inf, np.inf, (self._proprio_dim,), np.float32)
        self.observation_space = spaces.Dict(obs_spaces)

        spec = self._dm_env.action_spec()
        self._low = np.asarray(spec.minimum, np.float64) * np.ones(spec.shape)
        self._high = np.asarray(spec.maximum, np.float64) * np.ones(spec.shape)
        self.action_space = spaces.Box(self._low.astype(np.float32), self._high.astype(np.float32), dtype=np.float32)
        self._steps = self._control_steps = 0
        self._needs_reset = True

    def _camera_index(self, camera: int | str) -> int:
        """The index of a camera given by index (-1: MuJoCo's free camera) or by its name in the model."""
        model = self._physics.model
        names = [model.id2name(index, "camera") for index in range(model.ncam)]
        if isinstance(camera, str) and camera in names:
            return names.index(camera)
        if isinstance(camera, bool) or not isinstance(camera, (int, np.integer)) or not -1 <= camera < model.ncam:
            raise ValueError(f"camera_id must be in [-1, {model.ncam - 1}] or one of the camera names {names} for "
                             f"{self.spec_name}, got {camera!r}")
        return int(camera)

    @property
    def physics(self) -> Physics:
        """The underlying ``dm_control.mujoco.Physics`` (for goal variants and tests)."""
        return self._physics

    def flatten_observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Flatten a dm_control observation dict into the documented proprio vector."""
        parts = [np.asarray(observation[key], np.float32).ravel() for key in self.proprio_keys]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {}
        if "pixels" in self.obs_mode:
            obs["pixels"] = render_frame(self._physics, self.image_size, self.image_size, self.camera_id,
                                         self.render_fast)
        if "proprio" in self.obs_mode:
            obs["proprio"] = self.flatten_observation(self._task.get_observation(self._physics))
        return obs

    def _info(self) -> dict[str, Any]:
        return {"control_steps": self._step_control_steps}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict[str, Any]]:
        """Start an episode; with ``seed`` (below 2**32, dm_control's limit) the episode is reproducible."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or not 0 <= seed < 2**32):
            raise ValueError(f"seed must be an integer in [0, 2**32) (dm_control's random state), got {seed!r}")
        seed = None if seed is None else int(seed)  # Gymnasium takes Python ints only
        super().reset(seed=seed)
        if seed is not None:
            self._task.random.seed(seed)
        self._dm_env.reset()
        self._steps = self._control_steps = self._step_control_steps = 0
        self._needs_reset = False
        return self._observation(), self._info()

    def _check_action(self, action: Any) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self._low.shape:
            raise ValueError(f"action must have shape {self._low.shape} for {self.spec_name}, got shape {a.shape}")
        if not ((a >= self._low) & (a <= self._high)).all():
            if not np.isfinite(a).all():
                raise ValueError(f"action must be finite, got {a}")
            raise ValueError(
                f"action must lie within the action space bounds low={self._low} high={self._high}, got {a} "
                "(out-of-bounds actions are refused, not clipped)"
            )
        return a

    @property
    def spec_name(self) -> str:
        """``domain-task``, the name errors and logs use."""
        return f"{self.domain}-{self.task_name}"

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` for ``action_repeat`` control steps; return the 5-tuple."""
        if self._needs_reset:
            raise EpisodeStateError(
                f"{self.spec_name}: step() called before reset() or after the episode ended "
                "(terminated or truncated); call reset() first"
            )
        a = self._check_action(action)
        task, physics = self._task, self._physics
        reward = 0.0
        terminated = False
        start = self._control_steps
        for _ in range(min(self.action_repeat, self._control_limit - self._control_steps)):
            task.before_step(a, physics)
            physics.step(self._n_sub_steps)
            task.after_step(physics)
            reward += task.get_reward(physics)
            self._control_steps += 1
            if task.get_termination(physics) is not None:
                terminated = True
                break
        self._step_control_steps = self._control_steps - start
        self._steps += 1
        truncated = not terminated and self._steps >= self.time_limit
        self._needs_reset = terminated or truncated
        return self._observation(), reward, terminated, truncated, self._info()

    @property
    def render_kwargs(self) -> dict[str, Any]:
        """``Physics.render`` keywords that give this env's frames: for a raw dm_control loop feeding a pixel model
        (``dm_control.suite.wrappers.pixels.Wrapper(env, render_kwargs=...)``)."""
        return physics_render_kwargs(self.image_size, self.image_size, self.camera_id, self.render_fast)

    def render(self) -> np.ndarray | None:
        """The current frame (uint8 H×W×3, ``image_size`` square) when ``render_mode='rgb_array'``."""
        if self.render_mode != "rgb_array":
            return None
        return render_frame(self._physics, self.image_size, self.image_size, self.camera_id, self.render_fast)

    def close(self) -> None:
        """Close the dm_control environment (and its renderer)."""
        self._dm_env.close()
