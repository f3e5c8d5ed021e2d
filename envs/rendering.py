"""Headless rendering set-up for MuJoCo.

MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when dm_control is first imported.
:func:`configure_rendering` chooses EGL (Mesa's llvmpipe on a machine with no GPU, the
NVIDIA driver on one with a GPU) when nothing is set and no display is present, and
:func:`render_frame` turns the cryptic failures of a missing GL stack into one message that
names the system packages to install.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dm_control.mujoco import Physics

SYSTEM_PACKAGES = {
    "egl": "libegl1 libgl1 libgles2 libglvnd0 (and a driver: libegl-mesa0 / libgl1-mesa-dri for CPU)",
    "osmesa": "libosmesa6",
    "glfw": "libglfw3 and a running X display",
}

#: Render flags that MuJoCo's default scene turns on and the fast option turns off.
FAST_RENDER_FLAGS = {"shadow": False, "reflection": False}


def configure_rendering() -> str:
    """Set ``MUJOCO_GL=egl`` when unset and headless; return the backend in force."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL", "glfw")


class RenderingError(RuntimeError):
    """MuJoCo could not create an OpenGL context for offscreen rendering."""


def physics_render_kwargs(height: int, width: int, camera_id: int, fast: bool) -> dict[str, Any]:
    """The keywords of ``dm_control``'s ``Physics.render`` for a frame of this size from this camera, with
    shadows and reflections off when ``fast`` (what ``pixels.Wrapper(render_kwargs=...)`` takes)."""
    kwargs: dict[str, Any] = {"height": height, "width": width, "camera_id": camera_id}
    if fast:
        kwargs["render_flag_overrides"] = dict(FAST_RENDER_FLAGS)
    return kwargs


#: Whether this process rendered, or was forked from one that had: a forked copy of a rendering process hangs in
#: its first frame (the OpenGL driver's threads and locks do not survive a fork), so it is refused instead.
_RENDER_STATE = {"rendered": False, "forked_after_render": False}
if hasattr(os, "register_at_fork"):  # POSIX only; elsewhere there is no fork
    os.register_at_fork(after_in_child=lambda: _RENDER_STATE.update(forked_after_render=_RENDER_STATE["rendered"]))


def render_frame(physics: Physics, height: int, width: int, camera_id: int, fast: bool) -> np.ndarray:
    """Render one contiguous uint8 H×W×3 frame, with an actionable error when OpenGL is missing or the process
    was forked from one that had rendered (the frame would never come).

    dm_control returns a vertically flipped view (negative strides), which torch cannot wrap;
    the frame is made contiguous here, once, for every consumer.
    """
    if _RENDER_STATE["forked_after_render"]:
        raise RenderingError(
            "this process was forked from one that had already rendered, and its first frame would hang: start "
            "vector envs with the 'spawn' method (make_vector_env does by default; gymnasium.make_vec(..., "
            "vectorization_mode='async', vector_kwargs={'context': 'spawn'}))")
    try:
        frame = np.ascontiguousarray(physics.render(**physics_render_kwargs(height, width, camera_id, fast)))
        _RENDER_STATE["rendered"] = True
        return frame
    except ValueError:  # a frame larger than the offscreen buffer or an unknown camera: the caller's, not OpenGL's
        raise
    except Exception as error:  # noqa: BLE001 - every GL failure gets the same advice
        backend = os.environ.get("MUJOCO_GL", "glfw")
        loaded = getattr(sys.modules.get("dm_control._render"), "BACKEND", backend)
        if loaded != backend:
            raise RenderingError(
                f"dm_control was imported before MUJOCO_GL was set and loaded the {loaded!r} backend "
                f"({type(error).__name__}: {error}); import wm_robotics.envs before dm_control, "
                "or export MUJOCO_GL=egl before starting Python."
            ) from error
        needs = SYSTEM_PACKAGES.get(backend, SYSTEM_PACKAGES["egl"])
        raise RenderingError(
            f"MuJoCo rendering failed with MUJOCO_GL={backend!r} ({type(error).__name__}: {error}). "
            f"Install the system packages it needs: apt-get install {needs.split(' (')[0]}; "
            "or set MUJOCO_GL=osmesa after apt-get install libosmesa6."
        ) from error
