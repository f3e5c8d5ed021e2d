"""An analytic 1-D (or n-D) point-mass world model with a known optimum, and test-sized planners for it."""

from __future__ import annotations

import torch

from wm_robotics.behaviors.cem import CEMPlanner
from wm_robotics.behaviors.mppi import MPPIPlanner
from wm_robotics.models.base import State, WorldModel


class PointMass(WorldModel):
    """x' = decay·x + dt·a (+ bias: a model error); features = x; reward = −|x − target|²; optional constant
    continue."""

    def __init__(self, target=0.5, dt: float = 0.1, decay: float = 1.0, dim: int = 1, cont: float | None = None,
                 device: str = "cpu", decodes: bool = False, matmul: bool = False, bias: float = 0.0):
        super().__init__()
        self.obs_keys, self.action_dim, self.feature_dim = ("proprio",), dim, dim
        self.target = torch.as_tensor(target, dtype=torch.float32, device=device)
        self.device, self.decodes = device, decodes
        self.dt, self.decay, self.cont, self.bias = dt, decay, cont, bias
        self.imagine_calls = 0
        self.matmul, self.dtypes = matmul, set()  # matmul: the step as a Linear, so autocast reaches it

    def start(self, *positions) -> State:
        x = torch.tensor(positions, dtype=torch.float32, device=self.device)
        return {"x": x.reshape(len(positions), self.action_dim)}

    def imagine(self, state, horizon, actions=None, policy=None):
        self.imagine_calls += 1
        x, xs, used = state["x"], [], []
        for t in range(horizon):
            a = actions[:, t] if actions is not None else policy(x)
            if self.matmul:
                weight = torch.cat([self.decay * torch.eye(self.action_dim), self.dt * torch.eye(self.action_dim)], 1)
                x = torch.nn.functional.linear(torch.cat([x, a], -1), weight.to(x.device))
            else:
                x = self.decay * x + self.dt * a + self.bias
            self.dtypes.add(x.dtype)
            xs.append(x)
            used.append(a)
        return {"x": torch.stack(xs, 1)}, torch.stack(used, 1)

    def features(self, state):
        return state["x"]

    def predict_reward(self, features):
        return -(features - self.target).square().sum(-1)

    def predict_continue(self, features):
        return None if self.cont is None else torch.full(features.shape[:-1], self.cont, device=features.device)

    def decode(self, state, keys=None):
        """A "probe decoder" for goal energies on proprio fields: proprio = (x, −x)."""
        return {"proprio": torch.cat([state["x"], -state["x"]], -1)} if self.decodes else {}


def make(kind: str, **kw):
    """A planner of either kind with small test-sized populations unless overridden."""
    if kind == "cem":
        kw = {"horizon": 3, "iterations": 6, "candidates": 300, "elites": 30, **kw}
        return CEMPlanner(**kw)
    kw = {"horizon": 3, "iterations": 6, "samples": 300, "elites": 30, "sample_final": False, **kw}
    return MPPIPlanner(**kw)


KINDS = ["cem", "mppi"]
