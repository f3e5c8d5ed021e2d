"""scripts/pose_read_error.py in-process on a stub probe and env: the errors it reports, by hand."""

import json
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.configs import script_module

PAYLOAD = {"config": {"env": {"id": "toy-goal-v1"}}, "proprio_keys": [("position", 2), ("velocity", 1)]}


class _Env:
    """Seed s: the start frame holds s and the goal frame 2s; the true poses are set so that the errors are known."""

    def __init__(self):
        self.seeds, self.closed = [], False

    def reset(self, seed):
        self.seeds.append(seed)
        obs = {"pixels": np.array([float(seed)]), "proprio": np.array([3.0, 9.0, 0.0])}
        info = {"goal_pixels": np.array([2.0 * seed]), "goal_proprio": np.array([-3.0 + 0.1 * (seed - 9), 5.0, 0.0])}
        return obs, info

    def close(self):
        self.closed = True


class _Model:
    """Reads angle -3 for position[0], 0 for position[1] and frame² / 10 for velocity[0]; compares dims 0 and 2."""

    pose = SimpleNamespace(dims=torch.tensor([0, 2]), proprio_dim=3, angles=torch.tensor([0]))

    def read_pose(self, obs):
        return torch.tensor([[-3.0, 0.0, float(obs["pixels"].sum()) ** 2 / 10]], dtype=torch.float64)


def _run(monkeypatch, *args, model=None):
    script, env, agent = script_module("pose_read_error"), _Env(), SimpleNamespace(model=model or _Model())
    monkeypatch.setattr(script, "load_checkpoint", lambda path: PAYLOAD)
    monkeypatch.setattr(script, "agent_from_checkpoint", lambda payload, device: agent)
    monkeypatch.setattr(script, "envs", SimpleNamespace(make_env=lambda env_id, **kwargs: env,
                                                        env_kwargs=lambda config: {}))
    monkeypatch.setattr(sys, "argv", ["pose_read_error.py", "ckpt", *args])
    script.main()
    return env


def test_errors_are_wrapped_for_angles_over_the_probes_dims_and_seeds(monkeypatch, tmp_path, capsys):
    env = _run(monkeypatch, "--seeds", "10:13", "--out", str(tmp_path / "errors.json"))
    assert env.seeds == [10, 11, 12] and env.closed
    report = json.loads((tmp_path / "errors.json").read_text())
    assert report["seeds"] == [10, 13] and report["checkpoint"] == "ckpt"
    start, goal = report["errors"]["start frames"], report["errors"]["goal frames"]
    assert list(start) == list(goal) == ["position[0]", "velocity[0]"]  # the probe's dims only, named by field
    wrapped = 2 * math.pi - 6.0  # read -3, true 3: a difference of -6 rad is 2π - 6 the other way round
    assert start["position[0]"] == pytest.approx({"median": wrapped, "p90": wrapped})
    assert start["velocity[0]"] == pytest.approx({"median": 12.1, "p90": 13.94})  # 10, 12.1, 14.4: not the mean
    assert goal["position[0]"] == pytest.approx({"median": 0.2, "p90": 0.28})  # 0.1, 0.2, 0.3
    assert goal["velocity[0]"] == pytest.approx({"median": 48.4, "p90": 55.76})  # (2s)² / 10: 40, 48.4, 57.6
    out = capsys.readouterr().out
    assert "3 episodes (seeds 10-12)" in out and "position[0]: 0.283 / 0.283  velocity[0]: 12.100 / 13.940" in out


def test_a_dim_that_is_not_an_angle_is_not_wrapped(monkeypatch, tmp_path):
    model = _Model()
    model.pose = SimpleNamespace(dims=torch.tensor([0, 2]), proprio_dim=3, angles=torch.tensor([1]))
    _run(monkeypatch, "--seeds", "10:11", "--out", str(tmp_path / "errors.json"), model=model)
    start = json.loads((tmp_path / "errors.json").read_text())["errors"]["start frames"]
    assert start["position[0]"]["median"] == pytest.approx(6.0)


def test_bad_seeds_and_a_model_without_a_probe_are_refused_with_a_message(monkeypatch, capsys):
    for args, model, message in ((["--seeds", "10-13"], None, "argument --seeds: must be start:stop (integers), got"),
                                 (["--seeds", "5:5"], None, "must hold at least one seed (start < stop), got '5:5'"),
                                 ([], SimpleNamespace(pose=None), "the checkpoint's model has no pose probe")):
        with pytest.raises(SystemExit) as exit_info:
            _run(monkeypatch, *args, model=model)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
