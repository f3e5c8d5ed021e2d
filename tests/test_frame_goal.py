"""FrameGoal: the goal read from a frame, re-expressed near the measured state (nearest branch, pose feedback)."""

from __future__ import annotations

import math

import pytest
import torch

from wm_robotics.behaviors.frame_goal import FrameGoal, angle_difference, wrap_angle


def test_wrap_angle_maps_to_minus_pi_pi():
    angles = torch.tensor([0.0, 3.3, -3.3, 7.0, -math.pi])
    wrapped = wrap_angle(angles)
    assert bool(((wrapped >= -math.pi) & (wrapped < math.pi)).all())
    torch.testing.assert_close(torch.sin(wrapped), torch.sin(angles))
    torch.testing.assert_close(torch.cos(wrapped), torch.cos(angles))


def test_angle_differences_are_wrapped_and_other_differences_are_not():
    difference = angle_difference(torch.tensor([-3.1, -3.1]), torch.tensor([2.7, 2.7]), torch.tensor([True, False]))
    torch.testing.assert_close(difference, torch.tensor([2 * math.pi - 5.8, -5.8]))


def test_pose_feedback_across_plus_minus_pi_moves_a_limited_angle_by_the_wrapped_error():
    frame_goal = FrameGoal(torch.tensor([1.9]), torch.tensor([True]), feedback=True)  # a wrist with limits
    # the probe reads -3.1 where the wrist is at 2.7: an error of 0.383 rad across ±π, not -5.8
    torch.testing.assert_close(frame_goal.goal(torch.tensor([2.7]), read_now=torch.tensor([-3.1])),
                               torch.tensor([1.9 - (2 * math.pi - 5.8)]))


def test_unbounded_angles_take_the_branch_nearest_the_measured_state_and_limited_ones_stay_as_read():
    frame_goal = FrameGoal(torch.tensor([-3.0, 1.9, 0.5]), torch.tensor([True, True, False]),
                           torch.tensor([True, False, False]))
    goal = frame_goal.goal(measured=torch.tensor([3.2, -2.8, 2.0 * math.pi]))
    # an unbounded shoulder's -3.0 read from the frame is 3.283 next to a measured 3.2; a wrist with limits keeps
    # its 1.9 (its nearest branch, -4.38, lies beyond the limit); a non-angle field is not wrapped
    torch.testing.assert_close(goal, torch.tensor([2 * math.pi - 3.0, 1.9, 0.5]))


def test_pose_feedback_cancels_the_probe_bias_and_makes_the_goal_a_fixed_point():
    bias = torch.tensor([0.3, -0.7])  # what the probe adds to the pose on frames like the goal frame
    true_goal = torch.tensor([1.0, -2.5])
    frame_goal = FrameGoal(true_goal + bias, torch.tensor([True, True]), torch.tensor([True, False]), feedback=True)
    far = torch.tensor([-1.0, 2.0])
    # the probe's error on the current frame replaces its error on the goal frame
    torch.testing.assert_close(frame_goal.goal(far, read_now=far + bias), true_goal)
    # at the goal the current frame is the goal frame: the goal is the measured state, whatever the bias
    at_goal = torch.tensor([1.0, -2.5])
    torch.testing.assert_close(frame_goal.goal(at_goal, read_now=true_goal + bias), at_goal)
    without = FrameGoal(true_goal + bias, torch.tensor([True, True]))
    torch.testing.assert_close(without.goal(at_goal), true_goal + bias)  # without feedback the bias stays


def test_frame_goal_rejects_bad_input():
    with pytest.raises(ValueError, match=r"read_goal, angle_mask and unbounded_mask must all be \(F,\)"):
        FrameGoal(torch.zeros(2), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"must all be \(F,\), got \(1, 2\), \(1, 2\) and \(1, 2\)"):
        FrameGoal(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="unbounded_mask marks fields that angle_mask does not mark as angles"):
        FrameGoal(torch.zeros(2), torch.tensor([True, False]), torch.tensor([False, True]))
    with pytest.raises(ValueError, match="pose feedback needs the fields read from the current frame"):
        FrameGoal(torch.zeros(2), torch.zeros(2, dtype=torch.bool), feedback=True).goal(torch.zeros(2))
    with pytest.raises(ValueError, match=r"measured must be the \(2,\) goal fields, got \(1,\)"):
        FrameGoal(torch.zeros(2), torch.zeros(2, dtype=torch.bool)).goal(torch.zeros(1))
    with pytest.raises(ValueError, match=r"read_now must be the \(2,\) goal fields, got \(2, 2\)"):
        FrameGoal(torch.zeros(2), torch.zeros(2, dtype=torch.bool), feedback=True).goal(torch.zeros(2),
                                                                                         torch.zeros(2, 2))
