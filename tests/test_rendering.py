"""Headless rendering set-up and the message a missing OpenGL stack produces."""

import os

import pytest

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
