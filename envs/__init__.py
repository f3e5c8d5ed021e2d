"""Simulator side: dm_control suite tasks (and goal variants) as Gymnasium envs.

Importing this package registers ``wm_robotics/<domain>-<task>-v0`` for all 28 tasks of
``dm_control.suite.BENCHMARKING`` and ``wm_robotics/<domain>-<task>-goal-v1`` (and ``-goal-v0``) for reacher and
point_mass, so ``gymnasium.make("wm_robotics.envs:wm_robotics/cartpole-swingup-v0")`` works
from a fresh interpreter.
"""

from wm_robotics.envs.rendering import configure_rendering

configure_rendering()

from wm_robotics.envs.dmc import OBS_MODES, DMCEnv, EpisodeStateError  # noqa: E402
from wm_robotics.envs.goal import GoalDMCEnv  # noqa: E402
from wm_robotics.envs.registry import (  # noqa: E402
    ENV_IDS,
    GOAL_TASKS,
    SUITE_TASKS,
    check_env_id,
    env_id,
    register_all,
    suite_task,
)
from wm_robotics.envs.vector import control_steps_taken, env_kwargs, make_env, make_vector_env  # noqa: E402

register_all()

__all__ = [
    "DMCEnv",
    "ENV_IDS",
    "EpisodeStateError",
    "GOAL_TASKS",
    "GoalDMCEnv",
    "OBS_MODES",
    "SUITE_TASKS",
    "check_env_id",
    "control_steps_taken",
    "env_id",
    "env_kwargs",
    "make_env",
    "make_vector_env",
    "suite_task",
]
