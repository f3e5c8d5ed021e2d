"""The sampling planners by name, built with checked settings (for ``MPCBehavior`` and ``MPCController``)."""

from __future__ import annotations

import inspect
from typing import Any

from wm_robotics.behaviors.cem import CEMPlanner
from wm_robotics.behaviors.mppi import MPPIPlanner
from wm_robotics.behaviors.planning import Objective, SamplingPlanner
from wm_robotics.models.base import FeaturePolicy

PLANNERS = {"mppi": MPPIPlanner, "cem": CEMPlanner}
_BUILT_HERE = {"action_dim", "objective", "policy"}


def planner_settings_names(name: str) -> list[str]:
    """The settings planner ``name`` takes (its keyword arguments other than those ``build_planner`` fills)."""
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; valid planners: {sorted(PLANNERS)}")
    return sorted(set(inspect.signature(PLANNERS[name]).parameters) - _BUILT_HERE)


def build_planner(name: str, action_dim: int, objective: Objective, policy: FeaturePolicy | None = None,
                  **settings: Any) -> SamplingPlanner:
    """``PLANNERS[name]`` over ``objective`` (MPPI also samples ``policy``'s trajectories) with ``settings``;
    an unknown name or setting is a ``ValueError`` that lists the valid ones."""
    valid = planner_settings_names(name)
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(f"unknown {name} planner settings {unknown}; valid settings: {valid}")
    if name == "mppi":
        settings["policy"] = policy
    return PLANNERS[name](action_dim, objective=objective, **settings)
