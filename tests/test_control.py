"""MPCController: load a checkpoint in a fresh process and drive a raw dm_control loop."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from dm_control import suite

from tests.configs import ROOT, tiny_config
from wm_robotics.control import MPCController, uint8_pixels
from wm_robotics.train import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    Trainer(tiny_config("steps=120", "eval_every=1000"), run).run()
    return run / "checkpoints" / "latest.pt"


def test_round_trip_in_fresh_process_on_raw_dm_control(checkpoint):
    script = (
        "import sys, numpy as np\n"
        "from wm_robotics import MPCController\n"
        "assert not {'hydra', 'cma', 'matplotlib.pyplot'} & set(sys.modules), sys.modules  # nor a plot backend\n"
        "from dm_control import suite\n"
        "controller = MPCController.from_checkpoint(sys.argv[1], device='cpu', samples=64, iterations=2)\n"
        "env = suite.load('cartpole', 'swingup', task_kwargs={'random': 0})\n"
        "step, actions = env.reset(), []\n"
        "controller.reset()\n"
        "for _ in range(15):\n"
        "    action = controller.act(step.observation)\n"
        "    actions.append(action)\n"
        "    for _ in range(controller.action_repeat):\n"
        "        step = env.step(action)\n"
        "assert controller.action_repeat == 2 and step.observation['position'].shape == (3,)\n"
        "actions = np.array(actions)\n"
        "assert actions.dtype == np.float32 and actions.shape == (15, 1)\n"
        "assert np.isfinite(actions).all() and np.abs(actions).max() <= 1\n"
        "print('ok', actions.std())\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(checkpoint)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")


def test_checkpoint_from_before_the_input_biases_still_acts(checkpoint, tmp_path):
    # as saved before MLP input layers had a bias: no first-layer biases, one parameter fewer per optimiser group
    from wm_robotics.agent import agent_from_checkpoint
    from wm_robotics.checkpoint import load_checkpoint
    from wm_robotics.models.nets import InputLinear

    payload = load_checkpoint(checkpoint)
    model = agent_from_checkpoint(payload, torch.device("cpu")).model
    biases = [f"{name}.bias" for name, module in model.named_modules() if isinstance(module, InputLinear)]
    assert biases
    for key in biases:
        del payload["model"][key]
    optimisers = [state for name, state in payload["behavior"].items() if name.endswith("_opt")]
    assert optimisers  # the dreamer actor's and critic's
    for state in optimisers:
        for group in state["param_groups"]:
            group["params"] = group["params"][:-1]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    controller = MPCController.from_checkpoint(old, device="cpu", samples=64, iterations=1)
    env = suite.load("cartpole", "swingup", task_kwargs={"random": 0})
    action = controller.act(env.reset().observation)
    assert action.shape == (1,) and np.isfinite(action).all()


def test_every_observation_format_gives_the_same_action(checkpoint):
    controller = MPCController.from_checkpoint(checkpoint, device="cpu", planner="policy")
    raw = suite.load("cartpole", "swingup", task_kwargs={"random": 1}).reset().observation
    flat = np.concatenate([np.ravel(raw["position"]), np.ravel(raw["velocity"])]).astype(np.float32)
    actions = []
    for obs in (raw, flat, {"proprio": flat}):
        controller.reset()
        torch.manual_seed(0)  # the RSSM samples its latent while filtering
        actions.append(controller.act(obs))
    np.testing.assert_array_equal(actions[0], actions[1])
    np.testing.assert_array_equal(actions[0], actions[2])


def test_a_raw_dm_control_dict_with_pixels_drives_a_pixels_and_proprio_model():
    import wm_robotics.envs as envs
    from wm_robotics.builders import untrained_payload

    cfg = tiny_config("obs_mode=pixels+proprio")
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    controller = MPCController(untrained_payload(cfg, env), device="cpu", planner="policy")
    obs, _ = env.reset(seed=0)
    fields = env.unwrapped.proprio_keys
    raw = {"pixels": obs["pixels"], **{name: obs["proprio"][part] for name, part in fields.items()}}  # pixels.Wrapper's
    actions = []
    for given in (raw, obs):
        controller.reset()
        torch.manual_seed(0)
        actions.append(controller.act(given))
    np.testing.assert_array_equal(actions[0], actions[1])
    with pytest.raises(ValueError, match=r"the model needs observation keys \['pixels', 'proprio'\]"):
        controller.act({name: value for name, value in raw.items() if name != "pixels"})


def test_cem_and_goal_planning_run(checkpoint):
    controller = MPCController.from_checkpoint(checkpoint, device="cpu", planner="cem", horizon=4, iterations=2,
                                               candidates=32, elites=4)
    obs = np.zeros(5, np.float32)
    assert controller.act(obs).shape == (1,)
    controller.set_goal(np.ones(5, np.float32))
    action = controller.act(obs)
    assert np.isfinite(action).all() and -1 <= action[0] <= 1
    assert controller.planner._mean is not None  # the warm start for the next step
    controller.set_goal(-np.ones(5, np.float32))
    assert controller.planner._mean is None  # a new goal starts the search cold


def test_bad_inputs_say_what_was_expected(checkpoint):
    controller = MPCController.from_checkpoint(checkpoint, device="cpu", planner="policy")
    with pytest.raises(ValueError, match=r"'proprio' must have shape \(5,\), got \(4,\)"):
        controller.act(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="needs keys"):
        controller.act({"position": np.zeros(3)})
    with pytest.raises(ValueError, match=r"'position' of size 4, expected 3; 'velocity' of size 1, expected 2"):
        controller.act({"position": np.zeros(4), "velocity": np.zeros(1)})  # the right total, split wrongly
    with pytest.raises(ValueError, match="valid planners"):
        MPCController.from_checkpoint(checkpoint, device="cpu", planner="ilqr")
    with pytest.raises(ValueError, match="set_goal needs a planner"):
        controller.set_goal(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"takes no planner settings, got \['samples'\]"):
        MPCController.from_checkpoint(checkpoint, device="cpu", planner="policy", samples=64)
    with pytest.raises(ValueError, match=r"unknown mppi planner settings \['candidates'\]; "
                                         r"valid settings: .*'samples'"):
        MPCController.from_checkpoint(checkpoint, device="cpu", candidates=64)
    with pytest.raises(ValueError, match=r"'proprio' holds NaN or inf at indices \[1, 3\]"):
        controller.act(np.array([0, np.nan, 0, np.inf, 0], np.float32))
    with pytest.raises(ValueError, match="pixel values 0-255, got values from -1 to 300"):
        uint8_pixels(np.array([[-1, 300]]), "a frame")  # an int image would wrap around in uint8
    assert MPCController(checkpoint, device="cpu", planner="policy").act(np.zeros(5, np.float32)).shape == (1,)


def test_run_controller_script(checkpoint):
    result = subprocess.run([sys.executable, str(ROOT / "scripts/run_controller.py"), str(checkpoint), "--planner",
                             "policy", "--episodes", "1", "--threads", "1", "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "policy {} on cartpole-swingup (cpu): return" in result.stdout
    assert re.search(r"episode 0: return \d+\.\d, final qpos \[[-\d. ]+\]\n", result.stdout), result.stdout


def test_run_controller_script_planner_settings(checkpoint):
    script = [sys.executable, str(ROOT / "scripts/run_controller.py"), str(checkpoint), "--planner", "cem",
              "--episodes", "1", "--threads", "1", "--device", "cpu"]
    small = ["--set", "horizon=2", "--set", "iterations=1", "--set", "candidates=16", "--set", "elites=4"]
    result = subprocess.run(script + small, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cem {'horizon': 2, 'iterations': 1, 'candidates': 16, 'elites': 4} on cartpole-swingup" in result.stdout
    again = subprocess.run(script + small, capture_output=True, text=True, timeout=300)  # --seed seeds the planner too
    assert re.findall(r"episode 0: .*", again.stdout) == re.findall(r"episode 0: .*", result.stdout) != []
    for bad, message in ((["--set", "samples"], "--set takes KEY=VALUE, got 'samples'"),
                         (["--set", "bogus=1"], "unknown cem planner settings ['bogus']; valid settings: ["),
                         (["--episodes", "1"], "no checkpoint at")):
        command = script + bad if bad[0] == "--set" else [*script[:2], str(checkpoint) + "-missing", *script[3:]]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    result = subprocess.run([*script, "--episodes", "0"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--episodes must be at least 1, got 0" in result.stderr, result.stderr


def test_value_probe_script_needs_q_heads_and_a_prior(checkpoint):
    result = subprocess.run([sys.executable, str(ROOT / "scripts/value_probe.py"), str(checkpoint)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "needs proprio observations, Q heads and a policy prior" in result.stderr


def test_act_filters_from_the_previous_state_and_action(checkpoint):
    controller = MPCController.from_checkpoint(checkpoint, device="cpu", planner="policy")
    env = suite.load("cartpole", "swingup", task_kwargs={"random": 0})
    step = env.reset()
    controller.reset()
    torch.manual_seed(0)
    action = controller.act(step.observation)
    state = {key: value.clone() for key, value in controller._agent.state.items()}
    assert np.abs(action).max() > 1e-3  # a non-zero action, so that dropping it would show
    for _ in range(controller.action_repeat):
        step = env.step(action)
    controller.act(step.observation)
    with torch.inference_mode():  # h' = GRU(h, z, a): deterministic given the previous state and action
        expected = controller.model.img_step(state, torch.as_tensor(action)[None])["deter"]
    torch.testing.assert_close(controller._agent.state["deter"], expected)


def test_set_goal_targets_the_goal_observations_features(checkpoint):
    controller = MPCController.from_checkpoint(checkpoint, device="cpu", planner="cem", horizon=3, iterations=1,
                                               candidates=16, elites=4)
    goal = np.linspace(-1, 1, 5).astype(np.float32)
    torch.manual_seed(0)
    controller.set_goal(goal)
    torch.manual_seed(0)
    expected = controller.model.features(controller.encode(goal))
    torch.testing.assert_close(controller.planner.objective.goal, expected)


def test_run_controller_script_drives_a_pixel_model_through_dm_controls_pixels_wrapper(tmp_path):
    import wm_robotics.envs as envs
    from wm_robotics.builders import untrained_payload
    from wm_robotics.checkpoint import save_checkpoint

    cfg = tiny_config("obs_mode=pixels+proprio")
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    save_checkpoint(tmp_path / "pixels.pt", untrained_payload(cfg, env))
    env.close()
    result = subprocess.run([sys.executable, str(ROOT / "scripts/run_controller.py"), str(tmp_path / "pixels.pt"),
                             "--planner", "policy", "--episodes", "1", "--threads", "1", "--device", "cpu"],
                            capture_output=True, text=True, timeout=300,
                            env={key: value for key, value in os.environ.items() if key != "MUJOCO_GL"})
    assert result.returncode == 0, result.stderr[-2000:]  # MUJOCO_GL unset: the script chooses EGL headless
    assert re.search(r"policy \{\} on cartpole-swingup \(cpu\): return \d+\.\d ± 0\.0 over 1 episodes", result.stdout)
