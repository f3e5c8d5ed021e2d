"""DriftEstimate by hand: an exponential average of one-step errors with any weight, per environment, kept in the
estimate's own dtype and device and updated in place (an objective holding it sees every update and reset)."""

from __future__ import annotations

import torch

from wm_robotics.behaviors.drift_estimate import DriftEstimate


def test_a_quarter_weight_averages_the_errors_exponentially_per_environment():
    estimate = DriftEstimate((2, 1), weight=0.25)  # one goal per environment
    predicted = torch.ones(2, 1)
    for error in ([4.0, -8.0], [0.0, 8.0], [4.0, 0.0]):  # observed - predicted
        estimate.update(predicted + torch.tensor(error)[:, None], predicted)
    # env 0: 1, then 0.75 * 1 + 0 = 0.75, then 0.75 * 0.75 + 1 = 1.5625; env 1: -2, then -1.5 + 2 = 0.5, then 0.375
    torch.testing.assert_close(estimate.drift, torch.tensor([[1.5625], [0.375]]))


def test_the_estimate_is_updated_and_reset_in_place():
    estimate = DriftEstimate((3,), weight=0.5)
    held = estimate.drift  # as GoalObjective(drift=...) holds it
    assert estimate.update(torch.ones(3), torch.zeros(3)) is held
    torch.testing.assert_close(held, torch.full((3,), 0.5))
    estimate.reset()
    assert estimate.drift is held and not held.any()


def test_errors_in_another_dtype_are_averaged_in_the_estimates_own():
    estimate = DriftEstimate((2,), weight=0.5)
    estimate.update(torch.tensor([1.0, 3.0], dtype=torch.bfloat16), torch.zeros(2, dtype=torch.bfloat16))
    estimate.update(torch.tensor([1.0, 3.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    assert estimate.drift.dtype == torch.float32
    torch.testing.assert_close(estimate.drift, torch.tensor([0.75, 2.25]))


def test_the_estimate_lives_on_the_device_it_is_given():
    assert DriftEstimate((2,), weight=0.5, device="meta").drift.device.type == "meta"
