"""Behaviours (the C of V/M/C): an actor-critic learned in imagination, MPC planners, a CMA-ES controller."""

from wm_robotics.behaviors.actor_critic import ActorCritic, lambda_returns
from wm_robotics.behaviors.cem import CEMPlanner
from wm_robotics.behaviors.cmaes_controller import CMAESController
from wm_robotics.behaviors.mpc_behavior import MPCBehavior
from wm_robotics.behaviors.mppi import MPPIPlanner
from wm_robotics.behaviors.planning import GoalObjective, RewardObjective

__all__ = ["ActorCritic", "CEMPlanner", "CMAESController", "GoalObjective", "MPCBehavior", "MPPIPlanner",
           "RewardObjective", "lambda_returns"]
