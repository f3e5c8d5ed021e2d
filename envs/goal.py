"""Goal-conditioned variants of reacher and point_mass for planning toward a goal image.

At every reset a goal state is sampled, the task's target is moved to where that state puts
the end effector (so the task's own reward means "reach the goal"), and the goal is exposed
in ``info``:

- ``info["goal_pixels"]``: uint8 H×W×3 frame of the robot *at* the goal state;
- ``info["goal_proprio"]``: the proprio vector at the goal state (zero velocity);
- ``info["goal_distance"]``: end-effector distance to the goal (metres);
- ``info["success"]``: ``goal_distance`` within the task's target radius (the target geom's; the reacher's
  reward is full out to that plus the finger's radius, so success is the stricter of the two).

Goal joint angles are drawn uniformly from the domain's range and drawn again while a limited joint
falls outside its limits (the reacher's wrist: ±160°), so every goal is a pose the robot can take.
The ``-goal-v0`` ids keep the first draw whatever the limits (``goal_within_limits=False``): 9% of their
reacher goals bend the wrist past its limit; the goal-reacher results up to session 22 were measured on
them. A draw within the limits is the same goal in both versions.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from wm_robotics.envs.dmc import DMCEnv
from wm_robotics.envs.rendering import render_frame

#: domain -> (effector geom, joints that define the goal, goal sampling range per joint)
GOAL_DOMAINS: dict[str, tuple[str, tuple[str, ...], tuple[float, float]]] = {
    "reacher": ("finger", ("shoulder", "wrist"), (-np.pi, np.pi)),
    "point_mass": ("pointmass", ("root_x", "root_y"), (-0.25, 0.25)),
}


class GoalDMCEnv(DMCEnv):
    """A reacher or point_mass task whose target is a sampled, rendered goal state (within the joints'
    limits unless ``goal_within_limits=False``, the ``-goal-v0`` behaviour)."""

    def __init__(self, domain: str, task: str, goal_within_limits: bool = True, **kwargs: Any) -> None:
        if domain not in GOAL_DOMAINS:
            raise ValueError(f"goal variants exist for domains {sorted(GOAL_DOMAINS)}, got {domain!r}")
        super().__init__(domain, task, **kwargs)
        self._effector, self._goal_joints, self._goal_range = GOAL_DOMAINS[domain]
        self.goal_within_limits = goal_within_limits
        self.goal_pixels = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        self.goal_proprio = np.zeros(self._proprio_dim, np.float32)
        self._goal_xy = np.zeros(2)
        #: joint positions of the goal state (the joints named in ``GOAL_DOMAINS``).
        self.goal_joints = np.zeros(len(self._goal_joints))

    @contextmanager
    def _posed(self, joints: np.ndarray, velocity: np.ndarray | None = None) -> Iterator[None]:
        """Inside the block the goal joints are at ``joints`` moving at ``velocity`` (all other velocities
        zero, kinematics computed); afterwards the episode's own state is back."""
        physics, names = self._physics, list(self._goal_joints)
        qpos, qvel = physics.data.qpos.copy(), physics.data.qvel.copy()
        try:  # a refused joints / velocity array leaves the episode's state as it was, too
            physics.named.data.qpos[names] = joints
            physics.data.qvel[:] = 0
            if velocity is not None:
                physics.named.data.qvel[names] = velocity
            physics.forward()
            yield
        finally:
            physics.data.qpos[:], physics.data.qvel[:] = qpos, qvel
            physics.forward()

    def _sample_goal(self) -> None:
        physics, names = self._physics, list(self._goal_joints)
        limited = physics.named.model.jnt_limited[names].astype(bool)
        low, high = physics.named.model.jnt_range[names].T
        for _ in range(1000):
            self.goal_joints = self._task.random.uniform(*self._goal_range, size=len(names))
            inside = ~limited | ((low <= self.goal_joints) & (self.goal_joints <= high))
            if inside.all() or not self.goal_within_limits:
                break
        else:
            raise RuntimeError(f"no goal within the limits of {names} in 1000 draws from {self._goal_range}")
        with self._posed(self.goal_joints):
            self._goal_xy = physics.named.data.geom_xpos[self._effector, :2].copy()
            physics.named.model.geom_pos["target", :2] = self._goal_xy
            physics.forward()
            self.goal_pixels = render_frame(physics, self.image_size, self.image_size, self.camera_id, self.render_fast)
            self.goal_proprio = self.flatten_observation(self._task.get_observation(physics))

    def observation_near_goal(self, offset: Sequence[float], velocity: Sequence[float] | None = None
                              ) -> tuple[dict[str, np.ndarray], float]:
        """(observation, effector distance to the goal) of the goal state with its joints moved by ``offset``
        and moving at ``velocity`` (all other velocities zero); the episode's own state is left as it was.

        A probe of what a goal energy sees near the goal (``scripts/goal_energy_probe.py``).
        """
        offset = np.asarray(offset, float)
        speed = None if velocity is None else np.asarray(velocity, float)
        for name, value in (("offset", offset), ("velocity", speed)):
            if value is not None and value.shape != self.goal_joints.shape:
                raise ValueError(f"{name} must have one value per goal joint {list(self._goal_joints)}, got shape "
                                 f"{value.shape}")
        with self._posed(self.goal_joints + offset, speed):
            return self._observation(), self.goal_distance()

    def goal_distance(self) -> float:
        """End-effector distance to the goal position, in metres."""
        return float(np.linalg.norm(self._physics.named.data.geom_xpos[self._effector, :2] - self._goal_xy))

    def _info(self) -> dict[str, Any]:
        distance = self.goal_distance()
        radius = float(self._physics.named.model.geom_size["target", 0])
        return {
            **super()._info(),
            "goal_pixels": self.goal_pixels.copy(),
            "goal_proprio": self.goal_proprio.copy(),
            "goal_distance": distance,
            "success": distance <= radius,
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict[str, Any]]:
        """Start an episode with a freshly sampled goal (reproducible with ``seed``)."""
        super().reset(seed=seed, options=options)
        self._sample_goal()
        return self._observation(), self._info()
