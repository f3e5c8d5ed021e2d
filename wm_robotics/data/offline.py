"""Offline datasets: a folder of episode files (e.g. from ``scripts/collect.py``) loaded into a run's replay, checked
against the run's env before anything trains on it. The folder is only read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wm_robotics.data.episodes import list_episodes
from wm_robotics.data.replay import SequenceReplay


def load_offline(replay: SequenceReplay, folder: str | os.PathLike, info: dict[str, Any], run: str) -> int:
    """Fill ``replay`` with the newest episodes of ``folder`` that fit its capacity and print what was loaded; returns
    the steps loaded. ``FileNotFoundError`` without episode files; ``ValueError`` (``check_episodes_fit``) when they
    do not fit the ``run`` whose env has ``space_info`` ``info``."""
    folder, files = Path(folder), list_episodes(folder)
    if not files:
        raise FileNotFoundError(f"offline.data={folder}: no episode files (*.npz) there; scripts/collect.py writes "
                                "them")
    steps = replay.load(folder)
    check_episodes_fit(replay, info, f"offline.data={folder}", run)
    left_out = len(files) - replay.num_episodes
    print(f"offline: {steps:,} steps in {replay.num_episodes} episodes from {folder}"
          + (f" (the {left_out} oldest files left out: replay_capacity={replay.capacity:,})" if left_out else ""))
    return steps


def check_episodes_fit(replay: SequenceReplay, info: dict[str, Any], source: str, run: str) -> None:
    """ValueError when the episodes ``replay`` loaded from ``source`` do not hold the observation and action shapes
    of an env of ``space_info`` ``info`` (the ``run`` named in the message), or none is ``seq_len`` long."""
    needed = {f"obs/{key}": tuple(shape) for key, shape in info["obs_shapes"].items()}
    needed["action"] = (len(info["action_low"]),)
    stored = {key: shape for key, (shape, _) in replay.spec.items()}
    wrong = {key: stored.get(key) for key, shape in needed.items() if stored.get(key) != shape}
    if wrong:
        raise ValueError(f"{source}: episodes hold shapes {wrong}, this run ({run}) needs "
                         f"{ {key: needed[key] for key in wrong} }")
    if not replay.can_sample:
        raise ValueError(f"{source}: no episode has seq_len={replay.seq_len} observations to train on")
