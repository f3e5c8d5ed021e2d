"""The deployable Agent on stubs: env units out, normalised units back into the model, ``sample`` passed through to
policies and planners, and clear errors for a wrong number of envs, a missing key or a wrong shape."""

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_agent_and_rollout import SeesPreviousAction
from wm_robotics.agent import Agent


class HalfPolicy(nn.Module):
    """Normalised action features / 2; env units [0, 4]; records the ``sample`` flags it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.samples = []

    def policy(self, features, sample=True):
        self.samples.append(sample)
        return features / 2

    def to_env(self, action):
        return 2 * action + 2


class HalfPlanner(HalfPolicy):
    def plan(self, model, state, is_first, sample):
        self.samples.append(sample)
        return state["x"] / 2


@pytest.mark.parametrize("behavior", [HalfPolicy, HalfPlanner])
def test_actions_leave_in_env_units_and_return_to_the_model_normalised(behavior):
    model, acting = SeesPreviousAction(), behavior()
    agent = Agent(model, acting, torch.device("cpu"), {"proprio": (1,)})
    out = agent.act({"proprio": np.array([[1.0], [-1.0]], np.float32)}, np.array([True, True]), sample=False)
    agent.act({"proprio": np.array([[0.5], [0.0]], np.float32)}, np.array([False, False]), sample=True)
    np.testing.assert_allclose(out, [[3.0], [1.0]])  # 0.5 and -0.5 normalised: 3 and 1 in [0, 4]
    assert out.dtype == np.float32
    torch.testing.assert_close(model.previous_actions[1], torch.tensor([[0.5], [-0.5]]))  # the normalised action
    assert acting.samples == [False, True]


def test_acting_for_another_number_of_envs_asks_for_a_reset():
    agent = Agent(SeesPreviousAction(), HalfPolicy(), torch.device("cpu"))
    agent.reset(2)
    with pytest.raises(ValueError, match=r"is_first has 3 envs but the agent holds states for 2: call reset\(3\)"):
        agent.act({"proprio": np.zeros((3, 1), np.float32)}, np.ones(3, bool))


def test_observations_without_the_models_keys_or_one_row_per_env_are_refused():
    agent = Agent(SeesPreviousAction(), HalfPolicy(), torch.device("cpu"), {"proprio": (1,)})
    with pytest.raises(ValueError, match=r"obs needs keys \['proprio'\], got \['pixels'\]"):
        agent.act({"pixels": np.zeros((2, 1), np.float32)}, np.ones(2, bool))
    with pytest.raises(ValueError, match=r"one row per env \(2, as is_first\): shapes \{'proprio': \(2, 1\)\}, got "
                                         r"\{'proprio': \(1, 1\)\}"):
        agent.act({"proprio": np.zeros((1, 1), np.float32)}, np.ones(2, bool))
    with pytest.raises(ValueError, match=r"shapes \{'proprio': \(2, 1\)\}, got \{'proprio': \(2, 3\)\}"):
        agent.act({"proprio": np.zeros((2, 3), np.float32)}, np.ones(2, bool))
