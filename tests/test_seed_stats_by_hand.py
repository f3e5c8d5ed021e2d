"""More of the per-seed aggregate: IQM trimming on counts that are not multiples of 4, a 2-D input refused, and
the bootstrap interval following the seed and resample count it was given."""

import numpy as np
import pytest
from scipy import stats

from wm_robotics.seed_stats import seed_summary


@pytest.mark.parametrize("values, iqm", [
    ([0.0, 1.0, 2.0], 1.0),  # 3 seeds: ⌊0.75⌋ = 0 trimmed, the plain mean
    ([-50.0, 1.0, 2.0, 3.0, 4.0, 10.0, 90.0], 4.0),  # 7 seeds: ⌊1.75⌋ = 1 each end, the mean of 1, 2, 3, 4, 10
    ([-9.0, -8.0, 1.0, 2.0, 3.0, 4.0, 5.0, 21.0, 70.0, 80.0], 6.0),  # 10 seeds: ⌊2.5⌋ = 2 each end: 1..5 and 21
])
def test_iqm_trims_the_floor_of_a_quarter_at_each_end(values, iqm):
    assert seed_summary(values, resamples=200)["iqm"] == pytest.approx(iqm)


def test_a_table_of_scores_is_refused_even_with_several_rows():
    with pytest.raises(ValueError, match=r"one score per seed .* got shape \(2, 2\)"):
        seed_summary([[1.0, 2.0], [3.0, 4.0]])


def test_the_interval_is_scipys_percentile_bootstrap_with_the_given_seed_and_resamples():
    values = [3.1, 4.7, 2.2, 8.9, 5.5, 6.0]
    for seed, resamples in ((0, 10_000), (3, 10_000), (3, 500)):
        expected = stats.bootstrap((np.asarray(values),), np.mean, n_resamples=resamples, confidence_level=0.9,
                                   method="percentile", rng=np.random.default_rng(seed)).confidence_interval
        out = seed_summary(values, confidence=0.9, resamples=resamples, seed=seed)
        assert (out["ci_low"], out["ci_high"]) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert seed_summary(values, seed=0)["ci_low"] != seed_summary(values, seed=3)["ci_low"]  # the seed is used
