"""Behaviours (the C of V/M/C): an actor-critic learned in imagination, MPC planners, a CMA-ES controller."""

from wm_robotics.behaviors.actor_critic import ActorCritic, lambda_returns
from wm_robotics.behaviors.cem import CEMPlanner
from wm_robotics.behaviors.mpc_behavior import MPCBehavior
from wm_robotics.behaviors.mppi import MPPIPlanner
from wm_robotics.behaviors.planning import GoalObjective, RewardObjective

__all__ = ["ActorCritic", "CEMPlanner", "CMAESController", "GoalObjective", "MPCBehavior", "MPPIPlanner",
           "RewardObjective", "lambda_returns"]


def __getattr__(name: str) -> type:
    """``CMAESController`` on first use: it imports cma (and cma its scipy and matplotlib), which a controller in
    someone's control loop should not pay for or have pick a plotting backend."""
    if name == "CMAESController":
        from wm_robotics.behaviors.cmaes_controller import CMAESController

        return CMAESController
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
