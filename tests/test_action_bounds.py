"""ActionBounds (wm_robotics/behaviors/action_bounds.py): env ↔ normalised action units."""

import numpy as np
import pytest
import torch

from wm_robotics.behaviors.action_bounds import ActionBounds, from_env_units, to_env_units


def test_maps_bounds_onto_unit_box_and_back():
    bounds = ActionBounds(2, np.array([-2.0, 0.0]), np.array([2.0, 1.0]))
    torch.testing.assert_close(bounds.to_env(torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])),
                               torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 0.5]]))
    env_actions = torch.tensor([[1.5, 0.25]])
    torch.testing.assert_close(bounds.to_env(bounds.from_env(env_actions)), env_actions)
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)  # the same maps on numpy
    np.testing.assert_allclose(to_env_units(np.array([0.0, 0.0], np.float32), low, high), [0.0, 0.5])
    np.testing.assert_allclose(from_env_units(np.array([1.5, 0.25], np.float32), low, high), [0.75, -0.5])


def test_the_unit_box_edges_map_inside_any_bounds():
    generator = torch.Generator().manual_seed(0)
    low = -3 * torch.rand(10_000, generator=generator)
    high = low + 3 * torch.rand(10_000, generator=generator) + 1e-3  # bounds not exactly low + a float32 width
    for edge in (-1.0, 1.0):  # in float32 the plain affine map lands an ulp past high for ~16% of such bounds
        action = to_env_units(torch.full_like(low, edge), low, high)
        assert torch.all((low <= action) & (action <= high))


@pytest.mark.parametrize("low, high", [(1.0, -1.0), (-np.inf, 1.0), (-1.0, np.inf), (0.0, np.nan), (0.0, 0.0)])
def test_rejects_bounds_that_are_not_finite_and_ordered(low, high):
    with pytest.raises(ValueError, match="finite with action_low < action_high"):
        ActionBounds(1, low, high)


def test_wrong_bound_length_names_the_argument():
    with pytest.raises(ValueError, match=r"action_low must be a scalar or hold action_dim=3 values, got shape \(2,\)"):
        ActionBounds(3, [-1.0, -1.0], 1.0)
