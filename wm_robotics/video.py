"""Video export with imageio: annotated frames, panels side by side, MP4 or GIF."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw

VIDEO_SUFFIXES = (".mp4", ".gif")


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


def side_by_side(panels: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Concatenate equally tall panels horizontally with a white gap."""
    height = panels[0].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for index, panel in enumerate(panels):
        if panel.shape[0] != height:
            raise ValueError(f"panel {index} is {panel.shape[0]} pixels tall, expected {height}")
        parts.extend([spacer, panel] if parts else [panel])
    return np.concatenate(parts, axis=1)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int = 25) -> Path:
    """Write uint8 frames to ``path`` (.mp4 via ffmpeg or .gif), atomically."""
    path = Path(path)
    if path.suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"video path must end in one of {VIDEO_SUFFIXES}, got {path.name!r}")
    frames = np.stack(list(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 N×H×W×3, got {frames.dtype} {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix == ".gif":
        iio.imwrite(temp, frames, duration=1000 / fps, loop=0)
    else:
        iio.imwrite(temp, frames, fps=fps, codec="libx264", macro_block_size=1, plugin="FFMPEG")
    os.replace(temp, path)
    return path


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
