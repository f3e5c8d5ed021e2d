"""The τ sweep's bookkeeping on a dream with known returns (checkpoint, replay and simulator replaced)."""

import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from wm_robotics import temperature_sweep as sweep_module
from wm_robotics.behaviors.cmaes_controller import CMAESController
from wm_robotics.evaluation import ReturnReport
from wm_robotics.models.base import WorldModel

BEHAVIOR = dict(kind="cmaes", population=4, rollouts=2, horizon=3, generations=1, every=1, warmup=0, sigma=0.5,
                discount=0.5, action_noise=0.0, diagonal=False, seed=7)
STARTS = torch.linspace(-1.0, 1.0, 8)[:, None]
HELD = torch.tensor([[-2.0], [0.0], [1.0], [3.0]])


class ActionPaysWithTemperature(WorldModel):
    """From state h, action a = policy(h) is repeated; each step pays a; remembers the τ of every dream."""

    obs_keys, action_dim, feature_dim = ("proprio",), 1, 1

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.temperature, self.dreamed_at = 1.0, []

    def features(self, state):
        return state["h"]

    def imagine(self, state, horizon, actions=None, policy=None):
        self.dreamed_at.append(self.temperature)
        action = policy(state["h"])
        return {"h": torch.stack([action] * horizon, 1)}, torch.stack([action] * horizon, 1)

    def predict_reward(self, features):
        return features[..., 0]


def _sweep(monkeypatch, model: ActionPaysWithTemperature) -> tuple[dict, list]:
    payload = {"config": {"behavior": BEHAVIOR, "model": {"kind": "vmc"}, "env": {"id": "toy"}, "seq_len": 4,
                          "obs_mode": "proprio"},
               "action_low": [-1.0], "action_high": [1.0], "counters": {"env_steps": 7}}
    evaluated = []

    def evaluate(agent, env, episodes, seed):
        evaluated.append((agent.behavior.weight.clone(), agent.behavior.bias.clone(), agent.model.temperature))
        return ReturnReport([1.0, 3.0], [4, 4])

    monkeypatch.setattr(sweep_module, "load_checkpoint", lambda checkpoint, map_location: payload)
    monkeypatch.setattr(sweep_module, "checkpoint_file", lambda checkpoint: Path("run/checkpoints/latest.pt"))
    monkeypatch.setattr(sweep_module, "agent_from_checkpoint", lambda payload, device: SimpleNamespace(model=model))
    env = SimpleNamespace(close=lambda: None)
    monkeypatch.setattr(sweep_module, "envs", SimpleNamespace(make_env=lambda *a, **k: env, env_kwargs=lambda c: {}))
    monkeypatch.setattr(sweep_module, "replay_starts",
                        lambda agent, episodes_dir, count, seq_len, seed: {"h": STARTS if seed == 0 else HELD})
    monkeypatch.setattr(sweep_module, "evaluate_returns", evaluate)
    result = sweep_module.temperature_sweep("run", temperatures=(0.5, 1.5), generations=2, episodes=2, seed=0,
                                            device="cpu")
    return result, evaluated


def test_each_row_dreams_at_its_temperature_and_the_model_gets_its_own_back(monkeypatch, one_torch_thread):
    model = ActionPaysWithTemperature()
    result, evaluated = _sweep(monkeypatch, model)
    assert model.dreamed_at == [0.5, 0.5, 0.5, 1.5, 1.5, 1.5]  # two generations and the held dream per τ
    assert [tau for _, _, tau in evaluated] == [0.5, 1.5]
    assert model.temperature == result["trained_temperature"] == 1.0


def test_rows_score_the_evolved_controller_on_the_held_starts(monkeypatch, one_torch_thread):
    result, evaluated = _sweep(monkeypatch, ActionPaysWithTemperature())
    assert result["held_starts"] == 4 and [row["temperature"] for row in result["rows"]] == [0.5, 1.5]
    for row, (weight, bias, _) in zip(result["rows"], evaluated):
        dreams = [math.tanh(float(weight) * x + float(bias)) * (1 + 0.5 + 0.25) for x in HELD[:, 0].tolist()]
        assert row["dream_return"] == pytest.approx(statistics.mean(dreams), rel=1e-5)
        assert row["dream_return_std"] == pytest.approx(statistics.stdev(dreams), rel=1e-5)
        assert row["dream_reward_per_step"] == pytest.approx(statistics.mean(dreams) / 3, rel=1e-5)
        assert (row["real_return"], row["real_return_std"], row["real_reward_per_step"]) == (2.0, 1.0, 0.5)


def test_every_controller_evolves_from_the_sweep_seed_not_the_runs(monkeypatch, one_torch_thread):
    model = ActionPaysWithTemperature()
    _, evaluated = _sweep(monkeypatch, model)
    expected = CMAESController(1, 1, **{k: v for k, v in BEHAVIOR.items() if k not in ("kind", "seed")}, seed=0)
    expected.evolve(model, {"h": STARTS}, 2)
    for weight, bias, _ in evaluated:
        torch.testing.assert_close((weight, bias), (expected.weight, expected.bias), atol=0, rtol=0)
