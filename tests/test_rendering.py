"""Headless rendering set-up and the message a missing OpenGL stack produces."""

import os

import numpy as np
import pytest

from wm_robotics.envs import DMCEnv
from wm_robotics.envs.rendering import RenderingError, configure_rendering, render_frame


def test_headless_defaults_to_egl(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert configure_rendering() == "egl"


def test_a_display_leaves_mujoco_its_default_backend(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    assert configure_rendering() == "glfw" and "MUJOCO_GL" not in os.environ


def test_explicit_backend_is_kept(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert configure_rendering() == "osmesa"


def test_gl_failure_names_the_system_packages(monkeypatch):
    import dm_control._render

    class BrokenPhysics:
        def render(self, *args, **kwargs):
            raise RuntimeError("Cannot initialize a EGL device display")

    monkeypatch.setenv("MUJOCO_GL", dm_control._render.BACKEND)
    with pytest.raises(RenderingError, match="apt-get install libegl1"):
        render_frame(BrokenPhysics(), 64, 64, 0, fast=False)
    monkeypatch.setattr(dm_control._render, "BACKEND", "osmesa")  # each backend names its own packages
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    with pytest.raises(RenderingError, match="apt-get install libosmesa6;"):
        render_frame(BrokenPhysics(), 64, 64, 0, fast=False)


def test_render_frame_renders_the_camera_asked_for_faithfully_or_without_shadows_and_reflections():
    physics = DMCEnv("reacher", "easy", obs_mode="proprio").physics
    frame = render_frame(physics, 48, 64, 1, fast=False)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(frame, physics.render(48, 64, camera_id=1))  # the suite's own image
    assert not np.array_equal(frame, physics.render(48, 64, camera_id=0))
    fast = render_frame(physics, 48, 64, 1, fast=True)
    np.testing.assert_array_equal(fast, physics.render(48, 64, camera_id=1,
                                                       render_flag_overrides={"shadow": False, "reflection": False}))
    assert not np.array_equal(fast, physics.render(48, 64, camera_id=1, render_flag_overrides={"shadow": False}))


@pytest.mark.parametrize("height, width, camera_id", [(1000, 1000, 0), (48, 64, 7)])
def test_a_frame_too_large_or_an_unknown_camera_is_the_callers_error_not_a_missing_opengl(height, width, camera_id):
    physics = DMCEnv("reacher", "easy", obs_mode="proprio").physics
    with pytest.raises(ValueError) as caught:
        render_frame(physics, height, width, camera_id, fast=False)
    assert not isinstance(caught.value, RenderingError) and "apt-get" not in str(caught.value)
