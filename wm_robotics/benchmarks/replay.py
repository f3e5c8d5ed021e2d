"""Replay memory and sampling speed with 100k steps of 64×64 pixel episodes.

Stores 200 episodes × 501 observations (uint8 64×64×3 pixels + 5-d proprio, as a pixel
cartpole run of 100k agent steps would) and reports the process's peak RSS, the bytes per
stored step against the 12,288 B of one frame, and the time to sample a 16 × 64 batch.
"""

from __future__ import annotations

import resource
import time

import numpy as np

from wm_robotics.benchmarks.timing import print_table
from wm_robotics.data.replay import SequenceReplay

FRAME_BYTES = 64 * 64 * 3


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _episode(rng: np.random.Generator, steps: int) -> dict[str, np.ndarray]:
    return {"obs/pixels": rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8),
            "obs/proprio": rng.standard_normal((steps + 1, 5)).astype(np.float32),
            "action": rng.uniform(-1, 1, (steps, 1)).astype(np.float32),
            "reward": rng.random(steps).astype(np.float32),
            "terminated": np.zeros(steps, bool), "truncated": np.arange(steps) == steps - 1}


def run(quick: bool = False) -> dict:
    """Fill the replay, then sample; prints one table row."""
    episodes, steps = (20, 500) if quick else (200, 500)
    rng = np.random.default_rng(0)
    replay = SequenceReplay(None, capacity=episodes * (steps + 1), seq_len=64, batch_size=16)
    template = _episode(rng, steps)
    before = _peak_rss_mb()
    for _ in range(episodes):
        template["obs/pixels"] = rng.integers(0, 256, template["obs/pixels"].shape, dtype=np.uint8)
        replay.add_episode(template, save=False)
    filled = _peak_rss_mb()
    times = []
    for _ in range(50):
        start = time.perf_counter()
        replay.sample()
        times.append(1000 * (time.perf_counter() - start))
    row = {"stored_steps": replay.num_steps, "replay_nbytes_MB": replay.nbytes / 2**20,
           "bytes_per_step": replay.nbytes / replay.num_steps, "frame_bytes": FRAME_BYTES,
           "peak_rss_MB": filled, "rss_growth_MB": filled - before,
           "sample_ms_median": float(np.median(times)), "peak_rss_after_sampling_MB": _peak_rss_mb()}
    print_table("Replay: 64×64 pixel episodes in memory", ["stored steps", "replay MB", "B/step",
                "peak RSS MB", "RSS growth while filling MB", "sample 16×64 ms"],
                [[row["stored_steps"], row["replay_nbytes_MB"], row["bytes_per_step"], row["peak_rss_MB"],
                  row["rss_growth_MB"], row["sample_ms_median"]]])
    return {"replay": row}
