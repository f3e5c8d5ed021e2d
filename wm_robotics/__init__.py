"""wm_robotics: model-based robot control with learned world models.

``from wm_robotics import MPCController`` is loaded lazily, so that ``import wm_robotics.envs``
(simulator worker processes) does not import torch.
"""

__version__ = "0.1.0"
__all__ = ["MPCController"]


def __getattr__(name: str):
    if name == "MPCController":
        from wm_robotics.control import MPCController

        return MPCController
    raise AttributeError(f"module 'wm_robotics' has no attribute {name!r}")
