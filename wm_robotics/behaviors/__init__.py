"""Behaviours (the C of V/M/C): an actor-critic learned in imagination, and MPC planners."""

from wm_robotics.behaviors.actor_critic import ActorCritic, lambda_returns
from wm_robotics.behaviors.cem import CEMPlanner
from wm_robotics.behaviors.mppi import MPPIPlanner
from wm_robotics.behaviors.planning import GoalObjective, RewardObjective

__all__ = ["ActorCritic", "CEMPlanner", "GoalObjective", "MPPIPlanner", "RewardObjective", "lambda_returns"]
