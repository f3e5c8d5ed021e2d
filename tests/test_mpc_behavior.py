"""Planning behaviours through the one Trainer: the tdmpc, planet and jepa_goal presets end to end."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.configs import ROOT, preset_config
from wm_robotics.agent import agent_from_checkpoint
from wm_robotics.behaviors.mpc_behavior import MPCBehavior
from wm_robotics.behaviors.planning import GoalObjective
from wm_robotics.checkpoint import load_checkpoint, save_checkpoint
from wm_robotics.control import MPCController
from wm_robotics.evaluation import evaluate_checkpoint, markdown
from wm_robotics.models.jepa import JEPAWorldModel
from wm_robotics.train import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def untrained_goal_reacher(*overrides: str) -> tuple:
    """The goal-image reacher (pixels + proprio) and an untrained ``jepa_goal`` payload for it (+ ``overrides``)."""
    import gymnasium as gym

    import wm_robotics.envs  # noqa: F401  (registers the goal envs)
    from wm_robotics.train import untrained_payload

    env = gym.make("wm_robotics/reacher-easy-goal-v1", obs_mode="pixels+proprio")
    torch.manual_seed(0)
    return env, untrained_payload(preset_config("jepa_goal", *overrides), env)


def test_tdmpc_trains_model_and_prior_through_the_trainer(tdmpc_run, tmp_path):
    run, final = tdmpc_run
    payload = load_checkpoint(run)
    assert payload["counters"]["updates"] > 0 and payload["config"]["behavior"]["kind"] == "mpc"
    initial = Trainer(payload["config"], tmp_path).model.state_dict()  # the same seed: the run's first weights
    prior = [key for key in initial if key.startswith("policy.")]
    assert prior and all(not torch.equal(initial[key], payload["model"][key]) for key in prior)
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss/consistency", "loss/reward", "loss/value", "pi/loss", "latent/effective_rank"} <= set(header)
    assert np.isfinite(final["eval_return"]) and final["latent/collapsed"] in (0.0, 1.0)


def test_tdmpc_checkpoint_plans_with_prior_and_q_value(tdmpc_run):
    controller = MPCController.from_checkpoint(tdmpc_run[0], device="cpu", samples=16, iterations=1, elites=4)
    assert isinstance(controller.model, JEPAWorldModel)
    assert controller.planner.policy is not None and controller.planner.objective.value_fn is not None
    assert controller.act(np.zeros(5, np.float32)).shape == (1,)
    trained = MPCController.from_checkpoint(tdmpc_run[0], device="cpu")  # the preset's planner settings
    assert (trained.planner.samples, trained.planner.iterations, trained.planner.elites) == (32, 2, 8)
    compiled = MPCController.from_checkpoint(tdmpc_run[0], device="cpu", compile=True)
    assert compiled.planner_settings["compile"] is True and compiled.planner_settings["samples"] == 32
    compiled.planner.compile = False  # as after a failed compile: the planner searches eagerly
    assert compiled.planner_settings["compile"] is False  # a report records that it searched eagerly
    policy_only = MPCController.from_checkpoint(tdmpc_run[0], device="cpu", planner="policy")
    assert -1 <= policy_only.act(np.zeros(5, np.float32))[0] <= 1


def test_a_planning_agent_follows_a_grown_env_batch_and_checks_its_observations(tdmpc_run):
    agent = agent_from_checkpoint(load_checkpoint(tdmpc_run[0]), torch.device("cpu"))
    agent.reset(1)
    agent.act({"proprio": np.zeros((1, 5), np.float32)}, np.array([True]))
    agent.reset(3)  # more envs: the planner's warm start, made for one, starts cold
    assert agent.act({"proprio": np.zeros((3, 5), np.float32)}, np.ones(3, bool)).shape == (3, 1)
    with pytest.raises(ValueError, match=r"one row per env \(3, as is_first\): shapes \{'proprio': \(3, 5\)\}, "
                                         r"got \{'proprio': \(5,\)\}"):
        agent.act({"proprio": np.zeros(5, np.float32)}, np.zeros(3, bool))  # one env's observation for three
    with pytest.raises(ValueError, match=r"got \{'proprio': \(3, 6\)\}"):
        agent.act({"proprio": np.zeros((3, 6), np.float32)}, np.zeros(3, bool))
    with pytest.raises(ValueError, match=r"obs needs keys \['proprio'\], got \['position'\]"):
        agent.act({"position": np.zeros((3, 3), np.float32)}, np.zeros(3, bool))


def test_evaluation_plays_its_episodes_with_the_planner_settings_given(tdmpc_run, monkeypatch):
    import wm_robotics.evaluation as evaluation

    horizons, play = [], evaluation.evaluate_returns
    monkeypatch.setattr(evaluation, "evaluate_returns",
                        lambda agent, *a, **k: horizons.append(agent.behavior.planner.horizon) or play(agent, *a, **k))
    common = {"episodes": 1, "device": "cpu", "open_loop": False, "sensitivity": False, "planner_steps": 2}
    report = evaluate_checkpoint(tdmpc_run[0], planner_settings={"horizon": 2, "samples": 16}, **common)
    assert report["acted_by"] == {"kind": "mpc", "planner": "mppi",
                                  "settings": {"iterations": 2, "samples": 16, "elites": 8, "horizon": 2}}
    assert report["planner"]["settings"] == report["acted_by"]["settings"]  # the timed planner is the same one
    assert "; mppi: iterations 2, samples 16, elites 8, horizon 2)" in markdown(report)
    older = {key: value for key, value in report.items() if key != "acted_by"}  # a report from before acted_by
    assert "episodes, seeds 100000–100000) |" in markdown(older)
    other = evaluate_checkpoint(tdmpc_run[0], planner="cem", planner_settings={"horizon": 2}, **common)
    assert other["acted_by"]["settings"] == {"iterations": 2, "samples": 32, "elites": 8}  # not the preset's planner
    assert horizons == [2, 3]


def test_tdmpc_checkpoint_drives_raw_dm_control_in_a_fresh_process(tdmpc_run):
    script = (
        "import sys, numpy as np\n"
        "from wm_robotics import MPCController\n"
        "assert 'hydra' not in sys.modules\n"
        "from dm_control import suite\n"
        "controller = MPCController.from_checkpoint(sys.argv[1], device='cpu', samples=32, iterations=2, elites=8)\n"
        "env = suite.load('cartpole', 'swingup', task_kwargs={'random': 0})\n"
        "step, actions = env.reset(), []\n"
        "controller.reset()\n"
        "for _ in range(10):\n"
        "    actions.append(controller.act(step.observation))\n"
        "    step = env.step(actions[-1])\n"
        "actions = np.array(actions)\n"
        "assert actions.dtype == np.float32 and actions.shape == (10, 1) and np.abs(actions).max() <= 1\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script, str(tdmpc_run[0])], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")


def test_planet_runs_by_configuration(tmp_path):
    trainer = Trainer(preset_config("planet", "steps=120"), tmp_path)
    final = trainer.run()
    payload = load_checkpoint(tmp_path)
    assert payload["config"]["model"]["kind"] == "rssm" and payload["counters"]["updates"] > 0
    assert np.isfinite(final["eval_return"])
    controller = MPCController(payload, "cpu", "cem")  # plans what training planned: PlaNet's undiscounted sum
    assert controller.planner.objective.discount == trainer.behavior.planner.objective.discount == 1.0


def test_evaluation_leaves_the_collecting_agents_states_and_warm_start_alone(tmp_path):
    trainer = Trainer(preset_config("planet", "num_envs=2"), tmp_path)  # RSSM: recurrent states
    obs, _ = trainer.envs.reset(seed=0)
    for first in (True, False):  # mid-episode in both envs
        trainer.agent.act(obs, np.full(2, first))
    agent, planner = trainer.agent, trainer.behavior.planner
    kept = {key: value.clone() for key, value in agent.state.items()}, agent.prev_action.clone(), planner._mean.clone()
    trainer.evaluate()  # one episode in one env
    now = agent.state, agent.prev_action, planner._mean
    torch.testing.assert_close(now, kept, rtol=0, atol=0)
    trainer.agent.act(obs, np.zeros(2, bool))  # collection goes on from its own states
    with pytest.raises(ValueError, match=r"is_first has 1 envs but the agent holds states for 2: call reset\(1\)"):
        trainer.agent.act({key: value[:1] for key, value in obs.items()}, np.zeros(1, bool))
    trainer.envs.close()


def test_jepa_goal_trains_on_pixels_and_plans_toward_a_goal_image(tmp_path):
    import gymnasium as gym

    import wm_robotics.envs  # noqa: F401  (registers the goal envs)

    final = Trainer(preset_config("jepa_goal", "steps=80", "eval_every=80", "eval_goal_steps=3",
                                  "behavior.settings.horizon=3", "behavior.settings.iterations=2",
                                  "behavior.settings.candidates=16", "behavior.settings.elites=4"), tmp_path).run()
    assert 0 <= final["goal/success_rate"] <= 1 and final["goal/final_distance"] > 0  # planned toward eval goals
    controller = MPCController.from_checkpoint(tmp_path, device="cpu", planner="cem", horizon=3, iterations=2,
                                               candidates=16, elites=4)
    env = gym.make("wm_robotics/reacher-easy-goal-v1", obs_mode="pixels+proprio")
    obs, info = env.reset(seed=0)
    controller.set_goal({"pixels": info["goal_pixels"], "proprio": info["goal_proprio"]})
    torch.manual_seed(0)
    action = controller.act(obs)  # planned in the model's proprio block alone (the energy reads only that)
    assert action.shape == env.action_space.shape and env.action_space.contains(action)
    assert controller._goal_view is not None
    controller.reset()
    controller._goal_view = None  # the same plan through the whole model
    torch.manual_seed(0)
    np.testing.assert_allclose(controller.act(obs), action, atol=1e-6)
    controller.set_goal({"pixels": info["goal_pixels"], "proprio": info["goal_proprio"]})
    latent_goal = controller.model.features(
        controller.encode({"pixels": info["goal_pixels"], "proprio": info["goal_proprio"]}))
    controller.planner.objective = GoalObjective(latent_goal[0])  # replaced: plans in the whole model again
    assert env.action_space.contains(controller.act(obs))
    env.close()
    report = evaluate_checkpoint(tmp_path, episodes=1, device="cpu", open_loop=False, sensitivity=False,
                                 planner="cem", planner_steps=2, goal_episodes=2, goal_steps=3,
                                 planner_settings={"iterations": 1}, goal_energy={"norm": "l1"})
    planner = report["planner"]  # timed on the goal objective: a goal model has no reward head
    assert report["acted_by"] == {"kind": "mpc", "objective": "goal", "actions": "uniform random"}  # no goal there
    assert "uniform random actions: a goal planner has no goal here" in markdown(report)
    assert planner["settings"] == {"horizon": 3, "iterations": 1, "candidates": 16, "elites": 4}  # preset + override
    assert planner["goal_energy"] == {"norm": "l1", "terminal_only": False,
                                      "fields": ["position"],  # the preset's fields
                                      "latent_weight": 0, "from_frame": False, "pose_feedback": False,
                                      "unbounded_angles": [], "drift_correction": 0.5}
    terminal = MPCController.from_checkpoint(tmp_path, device="cpu", planner="cem", goal_energy={"terminal_only": True})
    terminal.set_goal({"pixels": info["goal_pixels"], "proprio": info["goal_proprio"]})
    assert terminal.planner.objective.terminal_only and terminal.planner.objective.norm == "l2"  # preset's norm kept
    payload = load_checkpoint(tmp_path)
    del payload["config"]["behavior"]["goal_energy"]  # a checkpoint saved before goal_energy existed
    assert MPCController(payload, "cpu", "cem").goal_energy == {}  # GoalObjective's defaults: l2, mean
    with pytest.raises(ValueError, match="valid keys"):
        MPCController.from_checkpoint(tmp_path, device="cpu", planner="cem", goal_energy={"metric": "cos"})
    with pytest.raises(ValueError, match="norm must be"):
        MPCController.from_checkpoint(tmp_path, device="cpu", planner="cem", goal_energy={"norm": "cos"})
    probe = subprocess.run([sys.executable, str(ROOT / "scripts/goal_energy_probe.py"), str(tmp_path), "--seed", "0",
                            "--offsets=-0.6:0:0.6", "--velocities", "0,3"], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in probe.stdout.splitlines() if line.startswith("| -0.60") or
            line.startswith("| +0.00")]
    (away, away_distance, away_rest, _), (goal, goal_distance, goal_rest, goal_moving) = [
        [float(cell) for cell in row] for row in rows]
    assert away == -0.6 and goal == 0 and away_distance > 0.05 and goal_distance < 1e-6
    assert goal_rest < min(away_rest, goal_moving)  # the energy is lowest at the goal state, at rest
    assert planner["ms_per_action"] > 0 and 0 <= planner["success_rate"] <= 1 and planner["goal_steps"] == 3
    assert len(planner["final_distance"]) == 2
    # an energy on decoded joint angles (the preset keeps its probe decoder)
    angles = MPCController.from_checkpoint(tmp_path, device="cpu", planner="cem", goal_energy={"fields": ["position"]},
                                           horizon=3, iterations=2, candidates=16, elites=4)
    angles.set_goal({"pixels": info["goal_pixels"], "proprio": info["goal_proprio"]})
    assert angles.planner.objective.proprio_index.tolist() == [0, 1]  # reacher proprio: position, to_target, velocity
    assert env.action_space.contains(angles.act(obs))
    with pytest.raises(ValueError, match=r"unknown proprio fields \['angle'\] in goal_energy; valid fields: "
                                         r"\['position', 'to_target', 'velocity'\]"):
        MPCController.from_checkpoint(tmp_path, device="cpu", planner="cem", goal_energy={"fields": ["angle"]})
    probe = subprocess.run([sys.executable, str(ROOT / "scripts/goal_energy_probe.py"), str(tmp_path), "--seed", "0",
                            "--offsets=0", "--velocities", "0", "--fields", "position"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and "proprio fields ['position']" in probe.stdout, probe.stderr[-2000:]
    assert "| +0.00 | 0.000 | 0.000 |" in probe.stdout  # the goal itself: zero distance, zero energy


def test_a_policy_prior_without_q_functions_is_refused():
    model = JEPAWorldModel({"proprio": (5,)}, 1, latent=16, units=32, enc_units=32, num_q=0, policy=True)
    with pytest.raises(ValueError, match=r"needs Q functions \(model.overrides.num_q > 0\)"):
        MPCBehavior(model)


def test_a_goal_runs_planner_settings_are_checked_before_it_trains():
    model = JEPAWorldModel({"proprio": (5,)}, 1, latent=16, units=32, enc_units=32, num_q=0, policy=False,
                           reward=False)
    with pytest.raises(ValueError, match=r"unknown cem planner settings \['candidatess'\]"):
        MPCBehavior(model, planner="cem", objective="goal", settings={"candidatess": 500})


def test_prior_update_moves_only_the_prior():
    torch.manual_seed(0)
    model = JEPAWorldModel({"proprio": (3,)}, 1, latent=16, units=16, enc_units=16, layers=1, num_q=2)
    behavior = MPCBehavior(model, settings={"samples": 8, "elites": 2, "iterations": 1, "policy_samples": 2})
    before = {name: p.clone() for name, p in model.named_parameters()}
    metrics = behavior.update(model, {"latent": torch.randn(4, 4, 16).softmax(-1)})
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith("policy.") for name in changed)
    assert np.isfinite(metrics["pi/loss"])
    action = behavior.plan(model, {"latent": torch.rand(3, 16)}, torch.tensor([True, False, True]))
    assert action.shape == (3, 1) and action.abs().max() <= 1


def test_goal_fields_with_a_policy_prior_plan_in_the_whole_model():
    # a split_dynamics pixels + proprio JEPA with a policy prior: MPPI's prior samples read whole latents,
    # so a goal on proprio fields must plan in the whole model, not in the proprio block
    env, payload = untrained_goal_reacher("model.overrides.policy=true", "model.overrides.num_q=2")  # Q trains it
    controller = MPCController(payload, "cpu", "mppi", horizon=3, samples=16, iterations=2, elites=4,
                               policy_samples=4)
    assert controller.planner.policy is not None
    obs, info = env.reset(seed=0)
    controller.set_goal({"pixels": info["goal_pixels"], "proprio": info["goal_proprio"]})
    assert controller._goal_view is None and controller.planner.objective.proprio_index.tolist() == [0, 1]
    assert env.action_space.contains(controller.act(obs)) and env.action_space.contains(controller.act(obs))
    env.close()


def test_evaluating_a_goal_task_with_planner_policy_is_refused_before_any_episode(tmp_path):
    env, payload = untrained_goal_reacher()
    save_checkpoint(tmp_path / "latest.pt", payload)
    with pytest.raises(ValueError, match="is a goal task and planner='policy' cannot plan toward a goal"):
        evaluate_checkpoint(tmp_path, episodes=1, device="cpu", planner="policy")
    env.close()


@pytest.mark.parametrize("split_dynamics", [True, False])
def test_goal_energy_with_a_latent_term_compares_the_goal_frame_block(split_dynamics):
    env, payload = untrained_goal_reacher(f"model.overrides.split_dynamics={split_dynamics}")
    controller = MPCController(payload, "cpu", "cem", goal_energy={"latent_weight": 0.5},
                               horizon=3, iterations=2, candidates=16, elites=4)
    obs, info = env.reset(seed=0)
    goal_obs = {"pixels": info["goal_pixels"], "proprio": info["goal_proprio"]}
    controller.set_goal(goal_obs)
    objective, model = controller.planner.objective, controller.model
    block = model.encoder.block("proprio")  # split_latent's proprio block, with or without its own predictor
    assert controller._goal_view is None  # the pixel block is read: plan in the whole model
    assert objective.latent_index.tolist() == [d for d in range(model.feature_dim) if not block.start <= d < block.stop]
    assert objective.latent_weight == 0.5 and objective.proprio_index.tolist() == [0, 1]
    here, goal = controller.encode(obs), controller.encode(goal_obs)
    with torch.inference_mode():
        decoded = [model.decode(state, ["proprio"])["proprio"][..., :2] for state in (here, goal)]
        latents = [model.features(state)[..., objective.latent_index] for state in (here, goal)]
        expected = (decoded[0] - decoded[1]).norm() + 0.5 * (latents[0] - latents[1]).norm()
        energy = -objective(model, {key: value[:, None] for key, value in here.items()}, None)  # (1, 1, ...) states
        at_goal = -objective(model, {key: value[:, None] for key, value in goal.items()}, None)
    assert energy.item() == pytest.approx(expected.item(), rel=1e-5) and at_goal.item() == pytest.approx(0, abs=1e-5)
    assert env.action_space.contains(controller.act(obs))
    with pytest.raises(ValueError, match="latent_weight must be >= 0"):
        MPCController(payload, "cpu", "cem", goal_energy={"latent_weight": -1.0})
    env.close()


def test_goal_from_frame_reads_the_goal_fields_from_the_frame_alone():
    from wm_robotics.train import untrained_payload
    from wm_robotics.wm_metrics import set_goal_from_info

    env, payload = untrained_goal_reacher("+model.overrides.pose_probe=true")
    controller = MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True},
                               horizon=3, iterations=2, candidates=16, elites=4)
    obs, info = env.reset(seed=0)
    assert controller.goal_keys == ("pixels",)
    controller.set_goal(info["goal_pixels"])  # an image: the goal's proprio is never given
    with torch.inference_mode():
        read = controller.model.read_pose({"pixels": torch.as_tensor(info["goal_pixels"][None])})[0, :2]
    torch.testing.assert_close(controller.planner.objective.goal, read)
    assert controller._goal_view is not None  # the energy reads decoded proprio only: planned in the proprio block
    assert env.action_space.contains(controller.act(obs))
    assert set_goal_from_info(controller, {"success": False, "goal_pixels": info["goal_pixels"]})  # no goal_proprio
    with pytest.raises(ValueError, match=r"the goal frame must have shape \(64, 64, 3\), got \(32, 32, 3\)"):
        controller.set_goal(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="the goal frame must hold integer pixel values 0-255 .* got dtype float32"):
        controller.set_goal(info["goal_pixels"].astype(np.float32) / 255)  # scaled to [0, 1]: not truncated to 0
    with pytest.raises(ValueError, match="observation 'pixels' must hold integer pixel values"):
        controller.act({**obs, "pixels": obs["pixels"] / 255.0})
    plain = untrained_payload(preset_config("jepa_goal"), env)  # no pose probe
    with pytest.raises(ValueError, match="from_frame reads the goal's proprio fields from its frame"):
        MPCController(plain, "cpu", "cem", goal_energy={"from_frame": True})
    env.close()


def test_pose_feedback_puts_the_frame_goal_at_the_measured_state_when_the_frame_is_the_goal_frame():
    from wm_robotics.behaviors.frame_goal import wrap_angle

    env, payload = untrained_goal_reacher("+model.overrides.pose_probe=true", "+model.overrides.pose_angles=[0,1]",
                                          "+model.overrides.pose_dims=[0,1]")
    settings = dict(horizon=3, iterations=2, candidates=16, elites=4)
    obs, info = env.reset(seed=0)
    with torch.inference_mode():
        read = MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True}, **settings).model.read_pose(
            {"pixels": torch.as_tensor(info["goal_pixels"][None])})[0, :2]
    measured = torch.as_tensor(obs["proprio"][:2])
    plain = MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True, "unbounded_angles": [0]}, **settings)
    plain.set_goal(info["goal_pixels"])
    plain.act(obs)  # the unbounded shoulder's goal on the branch nearest the measured angle, the wrist's as read
    goal = plain.planner.objective.goal
    torch.testing.assert_close(wrap_angle(goal - read), torch.zeros(2), atol=1e-5, rtol=0)
    assert abs(goal[0] - measured[0]) <= math.pi + 1e-5 and goal[1] == read[1]
    feedback = MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True, "pose_feedback": True}, **settings)
    feedback.set_goal(info["goal_pixels"])
    goal_tensor = feedback.planner.objective.goal
    feedback.act({"pixels": info["goal_pixels"], "proprio": obs["proprio"]})  # the goal frame seen now: at the goal
    torch.testing.assert_close(feedback.planner.objective.goal, measured, atol=1e-5, rtol=0)
    assert feedback.planner.objective.goal is goal_tensor  # updated in place: a captured CUDA graph stays valid
    with pytest.raises(ValueError, match="pose_feedback and unbounded_angles act on a goal read from its frame"):
        MPCController(payload, "cpu", "cem", goal_energy={"pose_feedback": True})
    with pytest.raises(ValueError, match=r"unbounded_angles \[2\] must be among the pose probe's angles "
                                         r"that the fields cover \[0, 1\]"):
        MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True, "unbounded_angles": [2]})
    with pytest.raises(ValueError, match=r"fields cover proprio dims \[2, 3\] that the pose probe does not read"):
        MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True, "fields": ["position", "to_target"]})
    env.close()


def test_drift_correction_adds_the_models_measured_one_step_error_to_its_predictions():
    from wm_robotics.behaviors.planning import goal_embedding

    env, payload = untrained_goal_reacher()
    controller = MPCController(payload, "cpu", "cem", goal_energy={"drift_correction": 0.5},
                               horizon=3, iterations=2, candidates=16, elites=4)
    obs, info = env.reset(seed=0)
    controller.set_goal({"pixels": info["goal_pixels"], "proprio": info["goal_proprio"]})
    drift = controller.planner.objective.drift
    action = controller.act(obs)
    assert not drift.any()  # nothing predicted yet at the first step
    state, previous = controller._agent.state, controller._agent.prev_action
    obs, *_ = env.step(action)
    controller.act(obs)
    index = controller.planner.objective.proprio_index
    with torch.inference_mode():
        observed = goal_embedding(controller.model, controller._agent.state, index)
        predicted = goal_embedding(controller.model, controller.model.img_step(state, previous), index)
    torch.testing.assert_close(drift, 0.5 * (observed - predicted))  # half the newest error, into the objective
    assert drift.abs().sum() > 0
    controller.reset()
    assert not drift.any()  # a new episode forgets the model's errors
    latent = MPCController(payload, "cpu", "cem", goal_energy={"drift_correction": 0.5, "latent_weight": 0.5},
                           horizon=3, iterations=2, candidates=16, elites=4)
    latent.set_goal({"pixels": info["goal_pixels"], "proprio": info["goal_proprio"]})
    for _ in range(2):
        latent.act(obs)
    assert latent.planner.objective.drift.shape == latent.planner.objective.goal.shape  # fields + pixel-block dims
    assert latent.planner.objective.drift[..., 2:].abs().sum() > 0
    with pytest.raises(ValueError, match=r"weight must be in \(0, 1\]"):
        MPCController(payload, "cpu", "cem", goal_energy={"drift_correction": 1.5})
    env.close()


def test_jepa_goal_frame_preset_trains_and_plans_from_the_goal_frame_alone(tmp_path):
    final = Trainer(preset_config("jepa_goal_frame", "steps=80", "eval_every=80", "eval_goal_steps=3",
                                  "behavior.settings.horizon=3", "behavior.settings.iterations=2",
                                  "behavior.settings.candidates=16", "behavior.settings.elites=4"), tmp_path).run()
    assert 0 <= final["goal/success_rate"] <= 1  # goals planned during training, from their frames alone
    controller = MPCController.from_checkpoint(tmp_path, device="cpu", planner="cem")
    assert controller.goal_keys == ("pixels",) and controller.pose_feedback
    assert controller.model.pose.encoder is not None and controller.model.pose.dims.tolist() == [0, 1]
    report = evaluate_checkpoint(tmp_path, episodes=1, device="cpu", open_loop=False, sensitivity=False,
                                 planner="cem", planner_steps=2, goal_episodes=1, goal_steps=3)
    assert report["planner"]["goal_energy"]["from_frame"] and len(report["planner"]["final_distance"]) == 1
