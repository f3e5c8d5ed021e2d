"""The goal energies MPCController plans with on the goal-image reacher: a latent term beside the proprio fields,
the goal read from a frame (nearest branch, pose feedback), drift correction, and the jepa_goal_frame preset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.configs import preset_config, untrained_goal_reacher
from wm_robotics.control import MPCController
from wm_robotics.evaluation import evaluate_checkpoint
from wm_robotics.train import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    from wm_robotics.builders import untrained_payload
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
    goal = plain.planner.objective.goal.clone()
    torch.testing.assert_close(wrap_angle(goal - read), torch.zeros(2), atol=1e-5, rtol=0)
    assert abs(goal[0] - measured[0]) <= math.pi + 1e-5 and goal[1] == read[1]
    feedback = MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True, "pose_feedback": True}, **settings)
    feedback.set_goal(info["goal_pixels"])
    goal_tensor = feedback.planner.objective.goal
    feedback.act({"pixels": info["goal_pixels"], "proprio": obs["proprio"]})  # the goal frame seen now: at the goal
    torch.testing.assert_close(feedback.planner.objective.goal, measured, atol=1e-5, rtol=0)
    assert feedback.planner.objective.goal is goal_tensor  # updated in place: a captured CUDA graph stays valid
    feedback.act({"pixels": info["goal_pixels"], "proprio": obs["proprio"]})  # the read goal is not corrected twice
    torch.testing.assert_close(feedback.planner.objective.goal, measured, atol=1e-5, rtol=0)
    turned = obs["proprio"] + np.array([2 * math.pi, 0, 0, 0, 0, 0], np.float32)  # the shoulder one turn on
    plain.act({**obs, "proprio": turned})
    torch.testing.assert_close(plain.planner.objective.goal, goal + torch.tensor([2 * math.pi, 0.0]))
    for alone in ({"pose_feedback": True}, {"unbounded_angles": [0]}):
        with pytest.raises(ValueError, match="pose_feedback and unbounded_angles act on a goal read from its frame"):
            MPCController(payload, "cpu", "cem", goal_energy=alone)
    with pytest.raises(ValueError, match="from_frame reads the goal's proprio fields from its frame: it needs fields, "
                                         "no latent_weight"):
        MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True, "latent_weight": 0.5})
    with pytest.raises(ValueError, match=r"unbounded_angles \[2\] must be among the pose probe's angles "
                                         r"that the fields cover \[0, 1\]"):
        MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True, "unbounded_angles": [2]})
    with pytest.raises(ValueError, match=r"fields cover proprio dims \[2, 3\] that the pose probe does not read"):
        MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True, "fields": ["position", "to_target"]})
    _, wide = untrained_goal_reacher("+model.overrides.pose_probe=true", "+model.overrides.pose_angles=[0,1]",
                                     "+model.overrides.pose_dims=[0,1,2,3]")
    with pytest.raises(ValueError, match=r"unbounded_angles \[0\] must be among the pose probe's angles that the "
                                         r"fields cover \[\]"):
        MPCController(wide, "cpu", "cem",
                      goal_energy={"from_frame": True, "fields": "to_target", "unbounded_angles": [0]})
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
