"""Planning behaviours through the one Trainer: the tdmpc, planet and jepa_goal presets end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.configs import ROOT, preset_config, untrained_goal_reacher
from tests.point_mass import PointMass
from wm_robotics.agent import agent_from_checkpoint
from wm_robotics.behaviors.mpc_behavior import MPCBehavior
from wm_robotics.behaviors.planning import GoalObjective
from wm_robotics.checkpoint import load_checkpoint, save_checkpoint
from wm_robotics.control import MPCController
from wm_robotics.evaluation import evaluate_checkpoint, markdown
from wm_robotics.models.jepa import JEPAWorldModel
from wm_robotics.train import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_a_planning_behaviour_restarts_finished_envs_and_explores_with_the_first_steps_std(monkeypatch):
    model = PointMass(target=0.0, dt=1.0, decay=0.0)
    behavior = MPCBehavior(model, settings={"samples": 64, "elites": 8, "iterations": 3})
    state = model.start(0.0, 0.0)
    behavior.plan(model, state, torch.tensor([True, True]))
    resets = []
    monkeypatch.setattr(behavior.planner, "reset", lambda ids=None: resets.append(ids.tolist()))
    behavior.plan(model, state, torch.tensor([True, False]))
    assert resets == [[0]]  # only the env whose episode ended forgets its plan
    monkeypatch.undo()
    actions = []
    for sample in (False, True):
        behavior.planner.reset()
        torch.manual_seed(1)
        with monkeypatch.context() as patch:
            patch.setattr(torch, "randn_like", torch.ones_like)  # exploration noise of exactly one std
            actions.append(behavior.plan(model, state, torch.tensor([False, False]), sample=sample))
    torch.testing.assert_close(actions[1] - actions[0], behavior.planner.last_info["std"][:, 0])


def test_a_goal_behaviour_collects_with_uniform_random_actions():
    behavior = MPCBehavior(PointMass(dim=2), planner="cem", objective="goal")
    actions = behavior.plan(None, {}, torch.zeros(2000, dtype=torch.bool))
    assert actions.shape == (2000, 2) and -1 <= actions.min() < -0.99 and 0.99 < actions.max() <= 1
