"""Tests render headless: choose EGL before any test module imports dm_control."""

import os

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
