"""scripts/value_probe.py in-process on a stub model over the real cartpole: the rows it prints, by hand, and the
settings it refuses."""

import re
import sys
from types import SimpleNamespace

import pytest
import torch

from tests.configs import script_module


class _Model:
    """features = [cart x, cos θ, sin θ, cart v, pole ω]; prior's mean action a = x / 2 + sin θ + 10 v;
    the three Q heads are 10 s, 20 s and -3 s with s = x + a + 100 ω (the decoder is the identity)."""

    def __init__(self):
        self.q = _Heads()
        self.policy, self.twohot = object(), SimpleNamespace(decode=lambda values: values)

    def features(self, encoded):
        return encoded

    def pi(self, features, sample=True):
        assert not sample, "the probe prints the prior's mean action"
        return (features[:, :1] / 2 + features[:, 2:3] + 10 * features[:, 3:4],)


class _Heads:
    size = 3

    def __call__(self, features_and_action, _):
        s = features_and_action[:, 0] + features_and_action[:, 5] + 100 * features_and_action[:, 4]
        return torch.stack([10 * s, 20 * s, -3 * s])[:, :, None]  # (heads, batch, 1)


class _Controller:
    def __init__(self, payload, device, planner):
        assert planner == "policy"
        self.model = _Model()

    def encode(self, observation):
        return torch.as_tensor([[*observation["position"], *observation["velocity"]]], dtype=torch.float32)


def _run(monkeypatch, capsys, *args, obs_mode="proprio"):
    script = script_module("value_probe")
    monkeypatch.setattr(script, "load_checkpoint", lambda path: {"config": {"obs_mode": obs_mode,
                                                                            "env": {"id": "cartpole-swingup-v0"}}})
    monkeypatch.setattr(script, "MPCController", _Controller)
    monkeypatch.setattr(sys, "argv", ["value_probe.py", "run", *args])
    script.main()
    return capsys.readouterr().out


def _rows(out):
    return [tuple(float(cell) for cell in re.findall(r"[-+]?\d+\.\d+", line))
            for line in out.splitlines() if re.match(r"\| [-+]\d", line)]


def test_rows_hold_the_prior_action_and_the_mean_lowest_and_highest_head_at_rest(monkeypatch, capsys):
    out = _run(monkeypatch, capsys, "--values", "-0.4", "0.4", "--qpos", "0", "0.3")
    assert "cartpole-swingup, qpos [0.0, 0.3] at rest, joint 0 varied; V over 3 Q heads" in out
    # x = ±0.4, θ = 0.3 (sin 0.2955), at rest: a = ±0.2 + 0.2955; s = x + a = -0.3045 / 0.8955; V = 9 s
    assert _rows(out) == pytest.approx([(-0.40, 0.10, -2.7, -6.1, 0.9), (0.40, 0.50, 8.1, -2.7, 17.9)], abs=0.051)
    assert "| -0.40 | [+0.10] | -2.7 | -6.1 | 0.9 |" in out


def test_the_varied_joint_is_the_one_asked_for(monkeypatch, capsys):
    out = _run(monkeypatch, capsys, "--joint", "1", "--values", "0.5")  # pole at 0.5 rad, cart at 0
    assert _rows(out) == pytest.approx([(0.5, 0.48, 4.3, -1.4, 9.6)], abs=0.051)  # a = s = sin 0.5 = 0.479


@pytest.mark.parametrize("args", [["--joint", "-1"], ["--joint", "2"], ["--qpos", "0", "0", "0"]])
def test_a_joint_or_qpos_that_does_not_fit_the_task_is_refused(monkeypatch, capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        _run(monkeypatch, capsys, *args)
    assert exit_info.value.code == 2 and "cartpole has 2 joint positions" in capsys.readouterr().err


def test_a_pixel_checkpoint_is_refused(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _run(monkeypatch, capsys, obs_mode="pixels")
    assert "needs proprio observations, Q heads and a policy prior" in capsys.readouterr().err
