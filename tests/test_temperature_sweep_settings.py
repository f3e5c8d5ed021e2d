"""More of the τ sweep: bad settings refused before the checkpoint is read, the real episodes and replay it asks
for, the evolved step size it reports, dreams reproducible from the sweep seed, and its markdown table."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.test_temperature_sweep import BEHAVIOR, HELD, STARTS, ActionPaysWithTemperature
from wm_robotics import temperature_sweep as sweep_module
from wm_robotics.behaviors.cmaes_controller import CMAESController, dream_returns
from wm_robotics.evaluation import ReturnReport

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NoisyDream(ActionPaysWithTemperature):
    """Each step pays the action plus τ·uniform noise drawn from torch's global RNG (as an MDN-RNN's sample)."""

    def imagine(self, state, horizon, actions=None, policy=None):
        states, actions = super().imagine(state, horizon, actions, policy)
        return {"h": states["h"] + self.temperature * torch.rand_like(states["h"])}, actions


def _sweep(monkeypatch, model, **settings):
    payload = {"config": {"behavior": BEHAVIOR, "model": {"kind": "vmc"}, "env": {"id": "toy"}, "seq_len": 4,
                          "obs_mode": "proprio"},
               "action_low": [-1.0], "action_high": [1.0], "counters": {"env_steps": 7}}
    calls = SimpleNamespace(replay=[], evaluate=[], closed=[])
    env = SimpleNamespace(close=lambda: calls.closed.append(True))

    def replay_starts(agent, episodes_dir, count, seq_len, seed):
        calls.replay.append((episodes_dir, count, seq_len, seed))
        return {"h": STARTS if seed == 0 else HELD}

    def evaluate(agent, env, episodes, seed):
        calls.evaluate.append((episodes, seed))
        return ReturnReport([1.0, 3.0], [4, 4])

    monkeypatch.setattr(sweep_module, "load_checkpoint", lambda checkpoint, map_location: payload)
    monkeypatch.setattr(sweep_module, "checkpoint_file", lambda checkpoint: Path("run/checkpoints/latest.pt"))
    monkeypatch.setattr(sweep_module, "agent_from_checkpoint", lambda payload, device: SimpleNamespace(model=model))
    monkeypatch.setattr(sweep_module, "envs", SimpleNamespace(make_env=lambda *a, **k: env, env_kwargs=lambda c: {}))
    monkeypatch.setattr(sweep_module, "replay_starts", replay_starts)
    monkeypatch.setattr(sweep_module, "evaluate_returns", evaluate)
    settings = {"temperatures": (0.5, 1.5), "generations": 2, "episodes": 3, "seed": 0, **settings}
    return sweep_module.temperature_sweep("run", device="cpu", **settings), calls


@pytest.mark.parametrize("settings, wrong", [
    ({"temperatures": ()}, "{'temperatures': []}"), ({"temperatures": (1.0, -0.5)}, "{'temperatures': [1.0, -0.5]}"),
    ({"temperatures": (float("nan"),)}, "{'temperatures': [nan]}"), ({"generations": 0}, "{'generations': 0}"),
    ({"episodes": 0}, "{'episodes': 0}"), ({"held_starts": -5}, "{'held_starts': -5}")])
def test_bad_settings_are_refused_before_the_checkpoint_is_read(monkeypatch, settings, wrong):
    monkeypatch.setattr(sweep_module, "load_checkpoint", lambda *a, **k: pytest.fail("read the checkpoint"))
    with pytest.raises(ValueError) as error:
        sweep_module.temperature_sweep("run", **settings)
    assert str(error.value) == ("need temperatures >= 0 (at least one), generations, episodes and held_starts >= 1; "
                                f"got {wrong}")


def test_a_zero_temperature_is_a_valid_deterministic_dream(monkeypatch):
    result, _ = _sweep(monkeypatch, ActionPaysWithTemperature(), temperatures=(0.0,))
    assert [row["temperature"] for row in result["rows"]] == [0.0]


def test_a_model_without_a_temperature_is_refused_before_any_replay(monkeypatch):
    model = ActionPaysWithTemperature()
    del model.temperature
    monkeypatch.setattr(sweep_module, "replay_starts", lambda *a, **k: pytest.fail("read the replay"))
    with pytest.raises(ValueError, match="holds a vmc model, which has no sampling temperature"):
        _sweep(monkeypatch, model)


def test_real_episodes_replay_and_settings_are_the_ones_asked_for(monkeypatch):
    result, calls = _sweep(monkeypatch, ActionPaysWithTemperature(), seed=3, held_starts=10)
    assert calls.evaluate == [(3, 100_003), (3, 100_003)]  # evaluate.py's episode seeds, same for every τ
    assert calls.closed == [True]  # its renderer closed once the sweep is done
    episodes = Path("run/episodes")
    assert calls.replay == [(episodes, 32, 4, 3), (episodes, 2, 4, 4)]  # ⌊10 / seq_len⌋ held sequences
    assert {key: result[key] for key in ("generations", "episodes", "seed", "population", "rollouts", "horizon")} == {
        "generations": 2, "episodes": 3, "seed": 3, "population": 4, "rollouts": 2, "horizon": 3}
    _, calls = _sweep(monkeypatch, ActionPaysWithTemperature(), held_starts=3)
    assert calls.replay[1][1] == 1  # fewer held starts than a sequence: still one sequence


def test_rows_report_the_evolved_step_size_and_dreams_reproduce_from_the_sweep_seed(monkeypatch):
    model = NoisyDream()
    result, _ = _sweep(monkeypatch, model, temperatures=(0.5, 2.0), seed=0)
    settings = {k: v for k, v in BEHAVIOR.items() if k not in ("kind", "seed")}
    for row in result["rows"]:
        model.temperature = row["temperature"]
        torch.manual_seed(0)
        expected = CMAESController(1, 1, **settings, seed=0)
        metrics = expected.evolve(model, {"h": STARTS}, 2)
        torch.manual_seed(0)
        dream = dream_returns(model, {"h": HELD}, expected.weight[None], expected.bias[None], 3, 0.5)[0]
        assert row["final_sigma"] == metrics["cmaes/sigma"] != BEHAVIOR["sigma"]
        assert row["dream_return"] == pytest.approx(float(dream.mean()), rel=1e-6)


def test_markdown_puts_each_number_in_its_column(monkeypatch):
    result, _ = _sweep(monkeypatch, ActionPaysWithTemperature())
    result["rows"] = [{"temperature": 1.5, "dream_return": 12.34, "dream_return_std": 0.56,
                       "dream_reward_per_step": 0.1234, "real_return": 78.9, "real_return_std": 1.2,
                       "real_reward_per_step": 0.789}]
    table = sweep_module.markdown(result)
    assert "τ sweep on toy (proprio), V + M of 7 env steps; 2 generations × 4 candidates × 2 dreams of 3 steps; " \
           "dream return on 4 held start states, real return over 3 episodes" in table
    assert "| 1.5 | 12.3 ± 0.6 | 0.123 | 78.9 ± 1.2 | 0.789 |" in table.splitlines()
