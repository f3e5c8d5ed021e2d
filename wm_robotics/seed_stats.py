"""One number per seed → the aggregate a results table reports: mean, sd, IQM and a bootstrap interval.

The interquartile mean is rliable's IQM (Agarwal et al., 2021): the mean of the middle half, 25% trimmed
at each end (``scipy.stats.trim_mean``: ⌊n/4⌋ seeds each end, so none below 4 seeds), robust to one outlying
seed. The interval is a percentile bootstrap of the mean (``scipy.stats.bootstrap``), seeded so that a table
can be reproduced.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats


def seed_summary(values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> dict[str, float]:
    """Aggregate per-seed scores (e.g. each seed's final return): ``seeds``, ``mean``, ``std`` (sample sd),
    ``iqm``, and ``ci_low`` / ``ci_high``, the ``confidence`` percentile-bootstrap interval of the mean."""
    scores = np.asarray(values, dtype=float)
    if scores.ndim != 1 or len(scores) < 2:
        raise ValueError(f"need one score per seed for at least 2 seeds, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores must be finite, got {scores.tolist()}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    interval = stats.bootstrap((scores,), np.mean, n_resamples=resamples, confidence_level=confidence,
                               method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return {"seeds": len(scores), "mean": float(scores.mean()), "std": float(scores.std(ddof=1)),
            "iqm": float(stats.trim_mean(scores, 0.25)), "ci_low": float(interval.low),
            "ci_high": float(interval.high), "confidence": confidence}
