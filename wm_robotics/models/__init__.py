"""World models (the V and M of V/M/C) behind one seam, ``WorldModel``."""

from wm_robotics.models.base import State, WorldModel
from wm_robotics.models.rssm import RSSM, RSSMWorldModel

__all__ = ["RSSM", "RSSMWorldModel", "State", "WorldModel"]
