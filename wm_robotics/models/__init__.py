"""World models (the V and M of V/M/C) behind one seam, ``WorldModel``."""

from wm_robotics.models.base import State, WorldModel
from wm_robotics.models.jepa import JEPAWorldModel
from wm_robotics.models.rssm import RSSM, RSSMWorldModel
from wm_robotics.models.vmc import VMCWorldModel

__all__ = ["JEPAWorldModel", "RSSM", "RSSMWorldModel", "State", "VMCWorldModel", "WorldModel"]
