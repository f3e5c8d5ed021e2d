"""The per-seed aggregate: mean, sd, IQM and a reproducible bootstrap interval of the mean."""

import math

import numpy as np
import pytest

from wm_robotics.seed_stats import seed_summary


def test_iqm_drops_the_outlying_seeds_and_the_interval_brackets_the_mean():
    summary = seed_summary([855.1, 823.1, 761.7, 868.0, 858.0])
    assert summary["seeds"] == 5
    assert summary["mean"] == pytest.approx(833.18)
    assert summary["std"] == pytest.approx(np.std([855.1, 823.1, 761.7, 868.0, 858.0], ddof=1))
    assert summary["iqm"] == pytest.approx((823.1 + 855.1 + 858.0) / 3)  # 25% trimmed each end of 5: one seed
    assert 761.7 <= summary["ci_low"] < summary["mean"] < summary["ci_high"] <= 868.0
    assert seed_summary([855.1, 823.1, 761.7, 868.0, 858.0]) == summary  # seeded: a table reproduces


def test_a_wider_confidence_gives_a_wider_interval():
    values = [1.0, 2.0, 3.0, 4.0, 10.0, 11.0]
    narrow, wide = seed_summary(values, confidence=0.5), seed_summary(values, confidence=0.95)
    assert wide["ci_low"] < narrow["ci_low"] and narrow["ci_high"] < wide["ci_high"]


@pytest.mark.parametrize("values, confidence, message", [
    ([839.0], 0.95, "at least 2 seeds"),
    ([[1.0, 2.0]], 0.95, "one score per seed"),
    ([1.0, math.nan], 0.95, "must be finite"),
    ([1.0, 2.0], 1.0, "confidence must be in"),
])
def test_bad_input_is_refused_with_a_clear_message(values, confidence, message):
    with pytest.raises(ValueError, match=message):
        seed_summary(values, confidence=confidence)


def test_iqm_and_sample_std_by_hand():
    values = [1, 2, 3, 4, 5, 6, 7, 100]
    out = seed_summary(values, resamples=200)
    assert out["iqm"] == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    mean = sum(values) / 8
    assert out["mean"] == pytest.approx(mean)
    assert out["std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 7))


def test_percentile_bootstrap_of_the_mean_on_a_discrete_case():
    # 8 seeds, one of them 10: a resampled mean is 10·K/8 with K ~ Binomial(8, 1/8);
    # P(K = 0) = 0.34 > 0.025 and P(K <= 2) = 0.962 < 0.975 <= P(K <= 3) = 0.994: the interval is (0, 3.75)
    out = seed_summary([0, 0, 0, 0, 0, 0, 0, 10], confidence=0.95, resamples=10_000, seed=0)
    assert out["ci_low"] == pytest.approx(0.0, abs=1e-12)
    assert out["ci_high"] == pytest.approx(3.75, abs=1e-9)


@pytest.mark.parametrize("values, iqm", [([0.0, 1.0, 2.0, 10.0], 1.5),  # 4 seeds: one dropped at each end
                                         ([0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 50.0, 100.0], 2.5)])  # 8 seeds: two
def test_iqm_trims_a_quarter_of_the_seeds_at_each_end(values, iqm):
    assert seed_summary(values, resamples=200)["iqm"] == pytest.approx(iqm)


def test_the_summary_reports_the_confidence_it_was_asked_for():
    assert seed_summary([1.0, 2.0, 4.0], confidence=0.8, resamples=200)["confidence"] == 0.8


def test_a_zero_confidence_is_refused():
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 0.0"):
        seed_summary([1.0, 2.0], confidence=0.0)
