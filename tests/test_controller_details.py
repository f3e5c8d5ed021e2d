"""MPCController: the action it feeds back to the model, and the pixel values and array views it accepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.configs import preset_config, tiny_config, untrained_goal_reacher
from wm_robotics.behaviors.planning import GoalObjective
from wm_robotics.control import MPCController, uint8_pixels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_act_feeds_the_model_the_normalised_action_when_the_env_bounds_are_not_minus_one_one():
    import wm_robotics.envs as envs
    from wm_robotics.builders import untrained_payload

    cfg = tiny_config()
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    torch.manual_seed(0)
    payload = {**untrained_payload(cfg, env), "action_low": np.array([-2.0]), "action_high": np.array([4.0])}
    env.close()
    controller = MPCController(payload, device="cpu", planner="policy")
    action = controller.act(np.zeros(5, np.float32))
    assert -2 <= action[0] <= 4 and abs(action[0] - 1) > 1e-3  # not the middle, so that the units show
    # env units [-2, 4] → [-1, 1]: (a - 1) / 3
    torch.testing.assert_close(controller._agent.prev_action, torch.tensor([[(action[0] - 1) / 3]]))


def test_a_checkpoint_without_proprio_keys_joins_a_raw_dict_in_its_own_order():
    import wm_robotics.envs as envs
    from wm_robotics.builders import untrained_payload

    cfg = tiny_config()
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    payload = untrained_payload(cfg, env)
    env.close()
    del payload["proprio_keys"]  # saved before checkpoints named the key order: dm_control's dict order counts
    controller = MPCController(payload, device="cpu", planner="policy")
    obs = controller.model_observation({"velocity": np.array([1.0, 2.0]), "position": np.array([3.0, 4.0, 5.0])})
    assert obs["proprio"].tolist() == [[1.0, 2.0, 3.0, 4.0, 5.0]]


def test_a_goal_frame_with_an_alpha_channel_is_refused_by_its_shape():
    env, payload = untrained_goal_reacher("+model.overrides.pose_probe=true")
    env.close()
    controller = MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True})
    with pytest.raises(ValueError, match=r"the goal frame must have shape \(64, 64, 3\), got \(64, 64, 4\)"):
        controller.set_goal(np.zeros((64, 64, 4), np.uint8))


def test_uint8_pixels_accepts_an_integer_image_holding_0_and_255():
    image = uint8_pixels(np.array([[0, 255]], np.int64), "a frame")
    assert image.dtype == np.uint8 and image.tolist() == [[0, 255]]


def test_an_objective_swapped_in_after_a_frame_goal_is_left_as_it_is():
    env, payload = untrained_goal_reacher("+model.overrides.pose_probe=true")
    controller = MPCController(payload, "cpu", "cem", goal_energy={"from_frame": True}, horizon=3, iterations=1,
                               candidates=16, elites=4)
    obs, info = env.reset(seed=0)
    controller.set_goal(info["goal_pixels"])
    controller.act(obs)  # the frame goal moves with the measured state while its own objective plans
    mine = GoalObjective(torch.tensor([0.5, -0.5]), proprio_index=torch.tensor([0, 1]))
    controller.planner.objective = mine
    assert env.action_space.contains(controller.act(obs)) and mine.goal.tolist() == [0.5, -0.5]
    controller.planner.objective = GoalObjective(torch.zeros(controller.model.feature_dim))  # another width
    assert env.action_space.contains(controller.act(obs))
    env.close()


def _untrained_controller(*overrides: str) -> MPCController:
    import wm_robotics.envs as envs
    from wm_robotics.builders import untrained_payload

    cfg = tiny_config(*overrides)
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    torch.manual_seed(0)
    payload = untrained_payload(cfg, env)
    env.close()
    return MPCController(payload, device="cpu", planner="policy")


@pytest.mark.parametrize("obs_mode", ["pixels+proprio", "pixels"])
def test_dm_control_pixels_wrapper_observations_act_as_their_contiguous_copies(obs_mode):
    from dm_control import suite
    from dm_control.suite.wrappers import pixels

    controller = _untrained_controller(f"obs_mode={obs_mode}")
    assert controller.render_kwargs == {"height": 64, "width": 64, "camera_id": 0}  # the tiny config's frames
    dm_env = pixels.Wrapper(suite.load("cartpole", "swingup", task_kwargs={"random": 0}),
                            pixels_only=obs_mode == "pixels", render_kwargs=controller.render_kwargs)
    observation = dm_env.reset().observation
    assert any(stride < 0 for stride in observation["pixels"].strides)  # dm_control's frame is a flipped view
    assert uint8_pixels(observation["pixels"], "frame").flags.c_contiguous  # as a goal frame too
    copied = {key: np.array(value) for key, value in observation.items()}
    torch.manual_seed(1)  # the policy samples its action
    action = controller.act(observation)
    controller.reset()
    torch.manual_seed(1)
    np.testing.assert_array_equal(action, controller.act(copied))
    torch.manual_seed(2)  # the RSSM samples its posterior
    goal = controller.encode(observation)  # set_goal's path
    torch.manual_seed(2)
    for key, value in controller.encode(copied).items():
        torch.testing.assert_close(goal[key], value)


def test_a_reversed_view_of_a_flat_proprio_array_acts_as_its_copy():
    controller = _untrained_controller()
    assert controller.render_kwargs is None  # no frames to render for a proprio model
    reversed_view = np.linspace(-1, 1, 5, dtype=np.float32)[::-1]
    torch.manual_seed(1)
    action = controller.act(reversed_view)
    controller.reset()
    torch.manual_seed(1)
    np.testing.assert_array_equal(action, controller.act(reversed_view.copy()))


def test_a_goal_model_acting_before_set_goal_is_told_to_set_one():
    env, payload = untrained_goal_reacher()
    obs, _ = env.reset(seed=0)
    env.close()
    controller = MPCController(payload, device="cpu", planner="cem", candidates=8, elites=2, iterations=1, horizon=2)
    with pytest.raises(ValueError, match=r"has no reward head: plan toward a goal instead \(MPCController.set_goal"):
        controller.act(obs)


def _frame_goal_controller():
    import wm_robotics.envs as envs
    from wm_robotics.builders import untrained_payload

    cfg = preset_config("jepa_goal_frame")
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    torch.manual_seed(0)
    controller = MPCController(untrained_payload(cfg, env), device="cpu", planner="cem", candidates=8, elites=2,
                               iterations=1, horizon=2)
    return env, controller


def test_a_refused_goal_frame_leaves_the_previous_goal_corrected_at_every_step():
    env, controller = _frame_goal_controller()
    obs, info = env.reset(seed=0)
    controller.set_goal(info["goal_pixels"])
    objective = controller.planner.objective
    with pytest.raises(ValueError, match=r"the goal frame must have shape \(64, 64, 3\), got \(32, 64, 3\)"):
        controller.set_goal(info["goal_pixels"][:32])
    with pytest.raises(ValueError, match=r"the goal is a frame .* got a dict of \['proprio'\]"):
        controller.set_goal({"proprio": obs["proprio"]})
    controller.act(obs)
    before = objective.goal.clone()
    for _ in range(3):
        obs, *_ = env.step(env.action_space.high)
    controller.act(obs)
    env.close()
    assert controller.planner.objective is objective and not torch.equal(before, objective.goal)  # still moved


def test_a_time_step_a_torch_device_and_a_bare_image_get_what_a_robot_loop_needs():
    from collections import OrderedDict, namedtuple

    controller = _untrained_controller()
    time_step = namedtuple("TimeStep", "step_type reward discount observation")(  # dm_env.TimeStep's fields
        0, None, None, OrderedDict(position=np.zeros(3), velocity=np.zeros(2)))
    with pytest.raises(ValueError, match=r"got a dm_control TimeStep: pass its observation \(time_step.observation\)"):
        controller.act(time_step)
    assert controller.act(time_step.observation).shape == (1,)
    import wm_robotics.envs as envs
    from wm_robotics.builders import untrained_payload

    cfg = tiny_config("obs_mode=pixels")
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    pixel_model = MPCController(untrained_payload(cfg, env), device=torch.device("cpu"), planner="policy")
    env.close()
    assert pixel_model.device == torch.device("cpu")
    with pytest.raises(ValueError, match=r"this model needs a dict with keys \['pixels'\] \(a dm_control or "):
        pixel_model.act(np.zeros((64, 64, 3), np.uint8))
