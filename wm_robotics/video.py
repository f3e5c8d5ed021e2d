"""Video export with imageio: annotated frames, panels side by side, error maps, curve panels, MP4 or GIF.

Panels are square (``size`` × ``size``) and joined by :func:`side_by_side` with a 2-pixel white
gap, so a frame of n panels is ``size`` tall and ``n·size + 2·(n − 1)`` wide.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import imageio.v3 as iio
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from wm_robotics.atomic import write_atomic
from wm_robotics.checks import positive_int

VIDEO_SUFFIXES = (".mp4", ".gif")
GAP = 2
#: |real − imagined| is multiplied by this before colouring, so that small errors show.
ERROR_GAIN = 4.0


def upscale(frame: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an H×W×3 uint8 frame to ``size``×``size`` (keeps pixels crisp)."""
    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.NEAREST))


def annotate(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Write ``lines`` of text in the top-left corner of ``frame`` (white on a dark box)."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    text = "\n".join(lines)
    box = draw.multiline_textbbox((2, 1), text)
    draw.rectangle(box, fill=(0, 0, 0))
    draw.multiline_text((2, 1), text, fill=(255, 255, 255))
    return np.asarray(image)


def side_by_side(panels: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Concatenate equally tall panels horizontally with a white gap."""
    height = panels[0].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for index, panel in enumerate(panels):
        if panel.shape[0] != height:
            raise ValueError(f"panel {index} is {panel.shape[0]} pixels tall, expected {height}")
        parts.extend([spacer, panel] if parts else [panel])
    return np.concatenate(parts, axis=1)


def video_path(path: str | os.PathLike, fps: float = 25) -> Path:
    """``path`` as a video path, checked before any frame is made: it must end in one of ``VIDEO_SUFFIXES``, and a
    GIF's ``fps`` must be one it can play (frame delays are whole hundredths of a second, and viewers slow delays
    under 2 of them to 10 fps: at most 50 fps)."""
    path = Path(path)
    if path.suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"video path must end in one of {VIDEO_SUFFIXES}, got {path.name!r}")
    if not fps > 0 or (path.suffix == ".gif" and fps > 50):
        raise ValueError(f"fps must be positive{' and at most 50 for a GIF (use .mp4)' * (path.suffix == '.gif')}, "
                         f"got {fps}")
    return path


def check_panel_size(size: int, name: str = "size") -> int:
    """``size`` (a panel side in pixels) checked before any frame is made; ``name``: the setting, for the message."""
    return positive_int(f"{name} (a panel side in pixels)", size)


def real_time_fps(metadata: dict, path: str | os.PathLike) -> float:
    """The frame rate at which an env's frames play in real time (its ``metadata["render_fps"]``: agent steps per
    simulated second; 25 without one), at most 50 for a GIF (what viewers play)."""
    fps = float(metadata.get("render_fps") or 25)
    return min(fps, 50.0) if Path(path).suffix == ".gif" else fps


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25) -> Path:
    """Write uint8 frames to ``path`` (.mp4 via ffmpeg or .gif), atomically.

    H.264 needs even sizes: an MP4 frame of odd height or width gets one white row / column. A GIF's frame delay is
    the nearest whole hundredth of a second (fps 30 plays at 33.3).
    """
    path = video_path(path, fps)
    frames = np.stack(list(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 N×H×W×3, got {frames.dtype} {frames.shape}")
    if path.suffix == ".gif":
        encoded = iio.imwrite("<bytes>", frames, extension=".gif", duration=10 * round(100 / fps), loop=0)
    else:
        pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
        frames = np.pad(frames, pad, constant_values=255)
        encoded = iio.imwrite("<bytes>", frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1,
                              plugin="FFMPEG")
    return write_atomic(path, lambda handle: handle.write(encoded))


def episode_frames(
    episode: dict[str, np.ndarray], size: int = 256, title: str = "", key: str = "obs/pixels"
) -> list[np.ndarray]:
    """Annotated frames of a saved episode: step, reward and return so far on each frame."""
    if key not in episode:
        raise ValueError(f"episode has no {key!r} array (keys: {sorted(episode)}); collect with obs_mode=pixels")
    pixels, rewards = episode[key], episode["reward"]
    returns = np.concatenate([[0.0], np.cumsum(rewards)])
    frames = []
    for step, frame in enumerate(pixels):
        reward = rewards[step - 1] if step else 0.0
        lines = [title] if title else []
        lines += [f"step {step}", f"reward {reward:.2f}", f"return {returns[step]:.1f}"]
        frames.append(annotate(upscale(frame, size), lines))
    return frames


def error_map(real: np.ndarray, imagined: np.ndarray, gain: float = ERROR_GAIN) -> np.ndarray:
    """Heat map (inferno, uint8 H×W×3) of ``gain``·|real − imagined|, averaged over RGB, for uint8 frames."""
    error = np.abs(real.astype(np.float32) - imagined.astype(np.float32)).mean(-1) / 255.0  # (H, W) in [0, 1]
    return (matplotlib.colormaps["inferno"](np.clip(gain * error, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def stack_rows(rows: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Stack rows of possibly different widths vertically (right-padded with white, white gaps)."""
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, gap), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    return np.concatenate(padded)[:-gap] if gap else np.concatenate(padded)


class CurvePanel:
    """Per-step curves plotted once with matplotlib into a ``size``×``size`` panel; ``frame(t)`` adds a cursor.

    ``curves`` maps a label to a (T+1,) array (one axis each, stacked); ``marks`` are steps drawn as
    dashed vertical lines (e.g. where an open-loop rollout restarts).
    """

    def __init__(self, curves: dict[str, np.ndarray], size: int, title: str, marks: Sequence[int] = ()) -> None:
        font = max(4.0, size / 40)
        with matplotlib.rc_context({"font.size": font, "axes.titlesize": font, "axes.labelsize": font}):
            figure = Figure(figsize=(size / 100, size / 100), dpi=100)
            canvas = FigureCanvasAgg(figure)
            axes = figure.subplots(len(curves), 1, sharex=True, squeeze=False)
            for axis, (label, values) in zip(axes[:, 0], curves.items()):
                axis.plot(np.arange(len(values)), values, lw=1)
                for mark in marks:
                    axis.axvline(mark, color="0.6", lw=0.6, ls="--")
                axis.set_ylabel(label)
                axis.tick_params(length=2, pad=1)
            axes[0, 0].set_title(title)
            axes[-1, 0].set_xlabel("step")
            figure.tight_layout(pad=0.3)
            canvas.draw()
            self.image = np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (size, size, 3)
            x0, x1 = (axes[0, 0].transData.transform((t, 0.0))[0] for t in (0.0, 1.0))
            self._x = lambda step: int(round(x0 + step * (x1 - x0)))
            height = self.image.shape[0]
            self._rows = [(height - int(ax.bbox.y1), height - int(ax.bbox.y0)) for ax in axes[:, 0]]

    def frame(self, step: int) -> np.ndarray:
        """The plot with a red vertical cursor at ``step``."""
        image = self.image.copy()
        x = min(max(self._x(step), 0), image.shape[1] - 1)
        for top, bottom in self._rows:
            image[top:bottom, x] = (220, 30, 30)
        return image
