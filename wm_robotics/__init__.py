"""wm_robotics: model-based robot control with learned world models."""

__version__ = "0.1.0"
