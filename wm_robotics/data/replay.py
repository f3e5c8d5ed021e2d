"""Sequence replay: episodes in memory (and on disk), sampled as fixed-length sequences.

Storage is one ring buffer per key (``obs/<key>``, ``action``, ``reward``, ``is_first``,
``is_terminal``, ``is_last``), already aligned with observations in the Dreamer convention of
:mod:`wm_robotics.models.base`. A *step* here is one stored observation (an episode of T
actions holds T+1). Pixels stay uint8 and each batch is gathered from the ring by fancy
indexing, so memory grows with stored steps, not with batch size × sequence length.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_robotics.data.episodes import (
    episode_index,
    list_episodes,
    load_episode,
    next_episode_index,
    save_episode,
    validate_episode,
)

_GROWTH = 1.5


class SequenceReplay:
    """FIFO replay of whole episodes, sampled as ``(B, seq_len)`` sequences within one episode.

    ``capacity`` counts stored steps (observations); adding past it evicts the oldest whole
    episodes from memory (their files on disk stay). Episodes shorter than ``seq_len``
    observations are stored but never sampled. With ``directory`` set, every added episode is
    also written there as ``episode-<index>-len<T>.npz``; ``load()`` recovers them after a
    restart. Buffers grow geometrically (×1.5, capped at ``capacity``) and never shrink, so
    ``nbytes`` is at most max(capacity, 1.5 × the most steps stored at once) steps' bytes.
    """

    def __init__(self, directory: str | Path | None, capacity: int = 1_000_000, seq_len: int = 64,
                 batch_size: int = 16, seed: int = 0) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.capacity, self.seq_len = _positive_int("capacity", capacity), _positive_int("seq_len", seq_len)
        self.batch_size = _positive_int("batch_size", batch_size)
        if seq_len > capacity:
            raise ValueError(f"seq_len={seq_len} exceeds capacity={capacity}: no sequence could ever be sampled")
        self._rng = np.random.default_rng(seed)
        self._next_file = self._scan_next_file()
        self._clear()

    @classmethod
    def from_directory(cls, directory: str | Path, **kwargs: Any) -> SequenceReplay:
        """A replay bound to ``directory`` holding its newest episode files (any ``*.npz`` name)."""
        replay = cls(directory, **kwargs)
        replay.load()
        return replay

    # ---------------------------------------------------------------- adding and loading

    def add_episode(self, episode: dict[str, np.ndarray], save: bool = True) -> Path | None:
        """Store an episode (file format of :mod:`episodes`); return its file path if written."""
        steps = validate_episode(episode) + 1
        if steps > self.capacity:
            raise ValueError(f"episode has {steps} observations, more than capacity={self.capacity}")
        aligned = self._align(episode)
        path = None
        if save and self.directory is not None:
            path = save_episode(self.directory / f"episode-{self._next_file:06d}-len{steps - 1}.npz", episode)
            self._next_file += 1
        self._insert(aligned, steps)
        return path

    def state_dict(self) -> dict[str, Any]:
        """The sampler's random state and the next episode file's index (the episodes live in their files): a
        resumed run samples on from it and sets aside the files written after it (``set_aside_from``)."""
        return {"rng": self._rng.bit_generator.state, "next_file": self._next_file}

    def set_aside_from(self, index: int) -> Path | None:
        """Move the episode files numbered ``index`` and above into a new ``superseded/resume-<n>`` folder of the
        directory, where ``load`` does not look (a run resumed from a checkpoint made before them collects their
        steps again); returns that folder, or None when there were none."""
        if self.directory is None or not self.directory.is_dir():
            return None
        later = [path for path in list_episodes(self.directory)
                 if (number := episode_index(path)) is not None and number >= index]
        if not later:
            return None
        number = 1
        while (aside := self.directory / "superseded" / f"resume-{number}").exists():
            number += 1
        aside.mkdir(parents=True)
        for path in later:
            os.replace(path, aside / path.name)
        self._next_file = self._scan_next_file()
        return aside

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue sampling from a ``state_dict``."""
        self._rng.bit_generator.state = state["rng"]

    def load(self, directory: str | Path | None = None) -> int:
        """Replace memory with the newest episode files of ``directory`` that fit in capacity.

        Defaults to the replay's own directory; temp files are skipped. Returns steps loaded.
        """
        folder = Path(directory) if directory is not None else self.directory
        if folder is None:
            raise ValueError("load() needs a directory: none given and the replay has none")
        self._clear()
        newest_first, total = [], 0
        for path in reversed(list_episodes(folder)):
            episode = load_episode(path)
            steps = len(episode["action"]) + 1
            if not newest_first and steps > self.capacity:  # loading nothing would hide the cause
                raise ValueError(f"{path}: episode has {steps} observations, more than capacity={self.capacity}")
            if total + steps > self.capacity:
                break
            newest_first.append((path, episode))
            total += steps
        while newest_first:
            path, episode = newest_first.pop()
            try:
                self.add_episode(episode, save=False)
            except ValueError as error:  # e.g. episodes of another env in the folder: none of them kept
                self._clear()
                raise ValueError(f"{path}: {error}") from error
        self._next_file = self._scan_next_file()
        return total

    def _scan_next_file(self) -> int:
        """One past the largest ``episode-<index>`` in the directory, so new names never collide."""
        return 0 if self.directory is None else next_episode_index(self.directory)

    def _align(self, episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Observation-aligned arrays (T+1 entries each) in the Dreamer convention; checks the spec."""
        steps = len(episode["action"])
        action = np.asarray(episode["action"], np.float32).reshape(steps, *np.shape(episode["action"])[1:] or (1,))
        aligned = {key: np.asarray(value) for key, value in episode.items() if key.startswith("obs/")}
        aligned["action"] = np.concatenate([np.zeros((1, *action.shape[1:]), np.float32), action])
        aligned["reward"] = np.concatenate([np.zeros(1, np.float32), np.asarray(episode["reward"], np.float32)])
        aligned["is_first"] = np.arange(steps + 1) == 0
        aligned["is_terminal"] = np.concatenate([[False], np.asarray(episode["terminated"], bool)])
        aligned["is_last"] = np.arange(steps + 1) == steps
        spec, stored = {key: (v.shape[1:], v.dtype) for key, v in aligned.items()}, self.spec
        if stored and spec != stored:
            diff = sorted(k for k in spec.keys() | stored.keys() if spec.get(k) != stored.get(k))
            got, want = ({k: s.get(k) for k in diff} for s in (spec, stored))
            raise ValueError(f"episode does not match the stored ones: (shape, dtype) {got}, expected {want}")
        return aligned

    # ---------------------------------------------------------------- ring buffer

    def _clear(self) -> None:
        self._store: dict[str, np.ndarray] = {}
        self._episodes: deque[tuple[int, int]] = deque()  # (logical start, observations)
        self._head = self._tail = 0  # logical step positions; physical = logical % allocated
        self._index: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def _allocated(self) -> int:
        return len(self._store["is_first"]) if self._store else 0

    def _insert(self, aligned: dict[str, np.ndarray], steps: int) -> None:
        while self._episodes and self.num_steps + steps > self.capacity:
            self._head += self._episodes.popleft()[1]
        needed = self.num_steps + steps
        if needed > self._allocated:
            self._grow(aligned, min(self.capacity, max(needed, int(self._allocated * _GROWTH))))
        rows = np.arange(self._tail, self._tail + steps) % self._allocated
        for key, value in aligned.items():
            self._store[key][rows] = value
        self._episodes.append((self._tail, steps))
        self._tail += steps
        self._index = None

    def _grow(self, like: dict[str, np.ndarray], size: int) -> None:
        live = np.arange(self._head, self._tail)
        store = {key: np.empty((size, *value.shape[1:]), value.dtype) for key, value in like.items()}
        for key, old in self._store.items():
            store[key][live % size] = old[live % len(old)]
        self._store = store

    # ---------------------------------------------------------------- sampling

    def _sample_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(cumulative valid starts, logical offset to add to a drawn number) per sampleable episode."""
        if self._index is None:
            meta = np.array(self._episodes, np.int64).reshape(-1, 2)
            meta = meta[meta[:, 1] >= self.seq_len]
            valid = meta[:, 1] - self.seq_len + 1
            cum = np.cumsum(valid)
            self._index = cum, meta[:, 0] - (cum - valid)
        return self._index

    @property
    def can_sample(self) -> bool:
        """Whether at least one stored episode has ``seq_len`` observations."""
        return len(self._sample_index()[0]) > 0

    def sample(self, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """``batch_size`` sequences of ``seq_len`` steps, uniform over all valid start points."""
        batch_size = self.batch_size if batch_size is None else _positive_int("batch_size", batch_size)
        cum, base = self._sample_index()
        if not len(cum):
            longest = max((n for _, n in self._episodes), default=0)
            raise ValueError(f"cannot sample sequences of seq_len={self.seq_len}: {self.num_steps} steps stored in "
                             f"{self.num_episodes} episodes, longest {longest} observations; an episode needs "
                             f"at least {self.seq_len}")
        draw = self._rng.integers(cum[-1], size=batch_size)
        starts = base[np.searchsorted(cum, draw, side="right")] + draw
        rows = (starts[:, None] + np.arange(self.seq_len)) % self._allocated
        return {key: value[rows] for key, value in self._store.items()}

    def sample_steps(self, count: int) -> dict[str, np.ndarray]:
        """``count`` single steps drawn uniformly from every stored step (arrays (count, ...))."""
        count = _positive_int("count", count)
        if not self.num_steps:
            raise ValueError("cannot sample steps from an empty replay")
        rows = self._rng.integers(self._head, self._tail, size=count) % self._allocated
        return {key: value[rows] for key, value in self._store.items()}

    # ---------------------------------------------------------------- sizes

    @property
    def num_steps(self) -> int:
        """Observations stored in memory."""
        return self._tail - self._head

    @property
    def num_episodes(self) -> int:
        """Episodes stored in memory."""
        return len(self._episodes)

    def __len__(self) -> int:
        return self.num_steps

    @property
    def spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """``{key: (per-step shape, dtype)}`` of the stored arrays; empty before the first episode."""
        return {key: (value.shape[1:], value.dtype) for key, value in self._store.items()}

    @property
    def nbytes(self) -> int:
        """Bytes of the allocated storage arrays."""
        return sum(value.nbytes for value in self._store.values())


def _positive_int(name: str, value: int) -> int:
    """``value`` as an int; a clear error unless it is a positive integer."""
    try:
        integral = not isinstance(value, bool) and int(value) == value  # 1e6 from a command line is fine
    except (TypeError, ValueError, OverflowError):  # None, NaN, inf, text
        integral = False
    if not integral or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def to_torch(batch: dict[str, np.ndarray], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A sampled batch as tensors on ``device``, dtypes kept (uint8 stays uint8, bool stays bool)."""
    return {key: torch.from_numpy(value).to(device) for key, value in batch.items()}
