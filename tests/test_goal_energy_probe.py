"""scripts/goal_energy_probe.py in-process on a stub controller and goal env: the offsets and velocities it sets,
the energies it prints, and the energy settings it passes on."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.configs import script_module


class _GoalEnv:
    """Two goal joints; the observation near the goal holds (shift, speed) and the effector is 0.1·|shift| away."""

    goal_joints = np.array([0.25, -0.5])

    def __init__(self, goal=True):
        self.unwrapped, self.goal, self.calls = self, goal, []

    def reset(self, seed):
        return {}, ({"success": False} if self.goal else {})

    def observation_near_goal(self, shift, speed):
        self.calls.append((shift.tolist(), speed.tolist()))
        return {"x": np.concatenate([shift, speed])}, 0.1 * abs(shift[0])


class _Objective:
    """Reward -(shift₀² + speed₀): the probe prints E = shift₀² + speed₀."""

    proprio_index = latent_index = None
    norm, latent_weight = "l2", 0.0

    def __call__(self, model, trajectory, actions):
        x = trajectory["x"][0, 0]
        return -(x[0] ** 2 + x[2])


def _run(monkeypatch, capsys, *args, env=None):
    script, env, made = script_module("goal_energy_probe"), env or _GoalEnv(), []

    class Controller:
        model, planner = None, SimpleNamespace(objective=_Objective())

        def __init__(self, payload, device, planner, goal_energy):
            made.append(goal_energy)
            if goal_energy.get("fields") == ["angle"]:
                raise ValueError("unknown proprio fields ['angle']")
            self.goal_energy = goal_energy

        def encode(self, obs):
            return {"x": torch.as_tensor(obs["x"])[None]}

    monkeypatch.setattr(script, "load_checkpoint", lambda path: {"config": {"env": {"id": "toy-goal-v1"}}})
    monkeypatch.setattr(script, "envs", SimpleNamespace(make_env=lambda env_id, **kwargs: env,
                                                        env_kwargs=lambda config: {}))
    monkeypatch.setattr(script, "MPCController", Controller)
    monkeypatch.setattr(script, "set_goal_from_info", lambda controller, info: "success" in info)
    monkeypatch.setattr(sys, "argv", ["goal_energy_probe.py", "run", *args])
    script.main()
    return capsys.readouterr().out, env, made


def test_ranges_include_their_stop_and_lists_are_read_as_given():
    floats = script_module("goal_energy_probe")._floats
    np.testing.assert_allclose(floats("-0.6:0:0.3"), [-0.6, -0.3, 0.0])
    np.testing.assert_allclose(floats("0:1:0.1")[-1], 1.0)  # a float step does not drop the stop
    np.testing.assert_allclose(floats("0,0.5,4"), [0.0, 0.5, 4.0])


def test_each_offset_and_velocity_moves_the_first_goal_joint_and_prints_its_energy(monkeypatch, capsys):
    out, env, made = _run(monkeypatch, capsys, "--offsets=-0.5:0.5:0.5", "--velocities", "0,2")
    assert made == [{}]  # no energy settings asked for: the preset's
    assert env.calls == [([offset, 0.0], [speed, 0.0]) for offset in (-0.5, 0.0, 0.5) for speed in (0.0, 2.0)]
    assert "| offset (rad) | effector distance (m) | E at 0 rad/s | E at 2 rad/s |" in out
    assert "|---|---|---|---|" in out.splitlines()
    assert [line for line in out.splitlines() if line.startswith("| ") and line[2] in "+-"] == [
        "| -0.50 | 0.050 | 0.250 | 2.250 |", "| +0.00 | 0.000 | 0.000 | 2.000 |", "| +0.50 | 0.050 | 0.250 | 2.250 |"]


def test_fields_and_latent_weight_reach_the_controller(monkeypatch, capsys):
    _, _, made = _run(monkeypatch, capsys, "--offsets", "0", "--velocities", "0", "--fields", "position",
                      "--latent-weight", "0")
    assert made == [{"fields": ["position"], "latent_weight": 0.0}]


def test_bad_fields_and_a_task_without_a_goal_are_refused(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(monkeypatch, capsys, "--fields", "angle")
    assert exit_info.value.code == 2 and "unknown proprio fields ['angle']" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="toy-goal-v1 is not a goal task"):
        _run(monkeypatch, capsys, env=_GoalEnv(goal=False))
    with pytest.raises(SystemExit) as exit_info:  # the weight of a term the energy does not have
        _run(monkeypatch, capsys, "--latent-weight", "0.5")
    assert exit_info.value.code == 2 and "neither --fields nor the preset's goal_energy" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0:1:0", "1:0:0.5", "0.5,", "0:nan:0.1"])
def test_bad_offsets_are_refused_before_the_checkpoint_is_read(monkeypatch, capsys, bad):
    script = script_module("goal_energy_probe")
    monkeypatch.setattr(script, "load_checkpoint", lambda path: pytest.fail("loaded"))
    monkeypatch.setattr(sys, "argv", ["goal_energy_probe.py", "run", f"--offsets={bad}"])
    with pytest.raises(SystemExit) as exit_info:
        script.main()
    assert exit_info.value.code == 2 and "argument --offsets: must" in capsys.readouterr().err
