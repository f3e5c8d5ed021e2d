"""Episode files: one compressed ``.npz`` per episode, written atomically.

Arrays: ``obs/<key>`` (T+1 entries: the reset observation and one per step), ``action``,
``reward``, ``terminated``, ``truncated`` (T entries each). The same format serves
``scripts/collect.py``, the replay buffer on disk, offline training and video export.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib.npyio import NpzFile

from wm_robotics.atomic import write_atomic

STEP_KEYS = ("action", "reward", "terminated", "truncated")


class EpisodeFormatError(ValueError):
    """An episode's arrays do not follow the documented format."""


def validate_episode(episode: dict[str, np.ndarray]) -> int:
    """Check the documented shapes; return the number of steps T."""
    missing = [k for k in STEP_KEYS if k not in episode]
    obs_keys = [k for k in episode if k.startswith("obs/")]
    if missing or not obs_keys:
        raise EpisodeFormatError(f"episode needs keys {list(STEP_KEYS)} and obs/<key>; missing {missing or 'obs/*'}")
    scalars = [key for key in (*STEP_KEYS, *obs_keys) if np.ndim(episode[key]) == 0]
    if scalars:
        raise EpisodeFormatError(f"{scalars} must be arrays with one entry per step, got scalars")
    steps = len(episode["action"])
    flat = {key: np.shape(episode[key]) for key in STEP_KEYS if key != "action" and np.ndim(episode[key]) != 1}
    if flat:
        raise EpisodeFormatError(f"{sorted(flat)} must have shape (T,), one value per step, got {flat}")
    for key in STEP_KEYS:
        if len(episode[key]) != steps:
            raise EpisodeFormatError(f"{key} has {len(episode[key])} entries, expected {steps} (one per step)")
    for key in obs_keys:
        if len(episode[key]) != steps + 1:
            raise EpisodeFormatError(f"{key} has {len(episode[key])} entries, expected {steps + 1} (T+1)")
    return steps


def save_episode(path: str | os.PathLike, episode: dict[str, np.ndarray]) -> Path:
    """Write ``episode`` to ``path`` via a temp file + rename, so no half file can appear."""
    validate_episode(episode)
    return write_atomic(path, lambda handle: np.savez_compressed(handle, **episode))


def load_episode(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an episode file into a dict of arrays (validated); an unreadable or malformed file is an
    ``EpisodeFormatError`` that names it."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, NpzFile):
            raise EpisodeFormatError("one .npy array, not an .npz archive of arrays")
        with data:
            episode = {key: data[key] for key in data.files}
        validate_episode(episode)
    except (EpisodeFormatError, OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise EpisodeFormatError(f"{path}: not a readable episode file ({type(error).__name__}: {error})") from error
    return episode


#: the number of an episode file named ``episode-<n>...`` (the order the files were written in)
EPISODE_INDEX = re.compile(r"^episode-(\d+)")


def episode_index(path: Path) -> int | None:
    """The number in an ``episode-<n>...`` file name; None for another name."""
    match = EPISODE_INDEX.match(path.name)
    return int(match.group(1)) if match else None


def next_episode_index(folder: str | os.PathLike) -> int:
    """One past the largest ``episode-<n>`` number among ``folder``'s episode files (0 for none): a new name's."""
    return max((index for path in list_episodes(folder) if (index := episode_index(path)) is not None), default=-1) + 1


def list_episodes(folder: str | os.PathLike) -> list[Path]:
    """Complete episode files in ``folder``, oldest first: ``episode-<n>`` files by their number (past 999999 it
    outgrows the zero padding of the name), after other names in name order; temp files are skipped."""
    files = [p for p in Path(folder).glob("*.npz") if not p.name.startswith(".")]
    return sorted(files, key=lambda p: (-1 if (index := episode_index(p)) is None else index, p.name))


class EpisodeRecorder:
    """Accumulates one episode step by step and returns it in the file format."""

    def __init__(self, first_obs: dict[str, np.ndarray]) -> None:
        self._obs = {key: [np.asarray(value)] for key, value in first_obs.items()}
        self._steps: dict[str, list] = {key: [] for key in STEP_KEYS}

    def add(self, action: np.ndarray, obs: dict[str, np.ndarray], reward: float, terminated: bool,
            truncated: bool) -> None:
        """Record one step: the action taken and what followed it."""
        for key, value in obs.items():
            self._obs[key].append(np.asarray(value))
        for key, value in zip(STEP_KEYS, (action, reward, terminated, truncated)):
            self._steps[key].append(value)

    def __len__(self) -> int:
        return len(self._steps["action"])

    def episode(self, cut_short: bool = False) -> dict[str, np.ndarray]:
        """The recorded arrays (``obs/<key>``, ``action`` float32, ``reward`` float32, flags bool); ``cut_short``
        marks the last step truncated (an episode stopped early, as a time limit would)."""
        out = {f"obs/{key}": np.stack(values) for key, values in self._obs.items()}
        out["action"] = np.asarray(self._steps["action"], np.float32)
        out["reward"] = np.asarray(self._steps["reward"], np.float32)
        out["terminated"] = np.asarray(self._steps["terminated"], bool)
        out["truncated"] = np.asarray(self._steps["truncated"], bool)
        if cut_short and len(self):
            out["truncated"][-1] = True
        return out
