"""scripts/value_probe.py: the prior's action and the critic's value at states set by hand, on a trained checkpoint."""

import re
import subprocess
import sys

import pytest
from dm_control import suite

from tests.configs import ROOT
from wm_robotics.control import MPCController

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_value_probe_script_reads_the_prior_and_critic_at_set_states(tdmpc_run):
    script = [sys.executable, str(ROOT / "scripts/value_probe.py"), str(tdmpc_run[0])]
    result = subprocess.run(script + ["--values", "-0.5", "0.5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = re.findall(r"\| ([-+]\d\.\d\d) \| \[([-+\d.]+)\] \| ([-\d.]+) \| ([-\d.]+) \| ([-\d.]+) \|", result.stdout)
    assert [row[0] for row in rows] == ["-0.50", "+0.50"], result.stdout
    controller = MPCController.from_checkpoint(tdmpc_run[0], device="cpu", planner="policy")
    env = suite.load("cartpole", "swingup")
    env.reset()
    for (x, action, value, lowest, highest) in rows:
        with env.physics.reset_context():  # the state the script sets: cart at x, pole upright, at rest
            env.physics.data.qpos[:] = [float(x), 0.0]
            env.physics.data.qvel[:] = 0.0
        controller.reset()
        assert controller.act(env.task.get_observation(env.physics))[0] == pytest.approx(float(action), abs=0.006)
        assert float(lowest) <= float(value) <= float(highest)
    result = subprocess.run(script + ["--qpos", "0"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "cartpole has 2 joint positions" in result.stderr, result.stderr
