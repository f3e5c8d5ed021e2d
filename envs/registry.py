"""Gymnasium ids for every dm_control benchmark task and the goal-conditioned variants.

``wm_robotics/<domain>-<task>-v0`` for each of ``suite.BENCHMARKING`` (28 tasks), e.g.
``wm_robotics/cartpole-swingup-v0``; goal variants are ``wm_robotics/<domain>-<task>-goal-v1``
for reacher and point_mass (goals within the joints' limits), and ``-goal-v0`` (goals drawn without
regard to them; the goal-reacher results up to session 22) to reproduce earlier results.
"""

from __future__ import annotations

import difflib

import gymnasium as gym
from dm_control import suite

from wm_robotics.envs.goal import GOAL_DOMAINS

NAMESPACE = "wm_robotics"
SUITE_TASKS: tuple[tuple[str, str], ...] = tuple(suite.BENCHMARKING)
GOAL_TASKS: tuple[tuple[str, str], ...] = tuple((d, t) for d, t in SUITE_TASKS if d in GOAL_DOMAINS)


#: goal-variant version -> whether its goals are drawn within the joints' limits
GOAL_VERSIONS = {1: True, 0: False}


def env_id(domain: str, task: str, goal: bool = False, version: int | None = None) -> str:
    """The Gymnasium id of a task, e.g. ``env_id("walker", "walk")``; goal variants default to their newest version."""
    version = (max(GOAL_VERSIONS) if goal else 0) if version is None else version
    return f"{NAMESPACE}/{domain}-{task}{'-goal' if goal else ''}-v{version}"


ENV_IDS: tuple[str, ...] = tuple(env_id(d, t) for d, t in SUITE_TASKS) + tuple(
    env_id(d, t, goal=True, version=v) for d, t in GOAL_TASKS for v in GOAL_VERSIONS
)


def check_env_id(name: str) -> str:
    """Return the full id for ``name`` (with or without namespace); else list the close ones (names compared
    without the namespace, which every id shares), or every id when none is close."""
    full = name if name.startswith(f"{NAMESPACE}/") else f"{NAMESPACE}/{name}"
    if full in ENV_IDS:
        return full
    names = {valid.removeprefix(f"{NAMESPACE}/"): valid for valid in ENV_IDS}
    close = [names[match] for match in difflib.get_close_matches(full.removeprefix(f"{NAMESPACE}/"), names, n=5,
                                                                 cutoff=0.6)]
    hint = f"closest: {close}" if close else f"valid ids: {list(ENV_IDS)}"
    raise gym.error.UnregisteredEnv(f"unknown environment {name!r}; {hint}. The ids are dm_control's "
                                    "suite.BENCHMARKING tasks and their goal variants; wm_robotics.envs.DMCEnv(domain, "
                                    "task) makes any other suite task")


def suite_task(name: str) -> tuple[str, str]:
    """The dm_control ``(domain, task)`` behind an id, e.g. ``("ball_in_cup", "catch")`` for
    ``ball_in_cup-catch-v0``."""
    full = check_env_id(name)
    return next((d, t) for d, t in SUITE_TASKS if full.startswith(f"{NAMESPACE}/{d}-{t}-"))


def register_all() -> None:
    """Register every id with Gymnasium (idempotent)."""
    for domain, task in SUITE_TASKS:
        _register(env_id(domain, task), "wm_robotics.envs.dmc:DMCEnv", domain, task)
    for domain, task in GOAL_TASKS:
        for version, within in GOAL_VERSIONS.items():
            _register(env_id(domain, task, goal=True, version=version), "wm_robotics.envs.goal:GoalDMCEnv", domain,
                      task, goal_within_limits=within)


def _register(name: str, entry_point: str, domain: str, task: str, **kwargs: bool) -> None:
    if name in gym.registry:
        return
    # The env enforces step-before-reset itself and is checked by the test-suite, so the
    # per-step wrappers gymnasium adds by default stay out of the hot path.
    gym.register(
        name,
        entry_point=entry_point,
        kwargs={"domain": domain, "task": task, **kwargs},
        order_enforce=False,
        disable_env_checker=True,
    )
