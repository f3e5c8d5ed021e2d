"""Open-loop imagination of an episode and its video: argument checks (all before an episode is played), episode
starts, one rollout without re-anchoring, decoded frames, the error-curve panels and the planner strip."""

import numpy as np
import pytest
import torch

import wm_robotics.envs as envs
from tests.configs import tiny_config, untrained_goal_reacher
from tests.test_video import PositionModel
from wm_robotics import imagination_video
from wm_robotics.agent import agent_from_checkpoint
from wm_robotics.builders import untrained_payload
from wm_robotics.data.episodes import EpisodeRecorder
from wm_robotics.imagination import Imagination, imagine_episode
from wm_robotics.imagination_video import export_imagination_video, imagination_frames, planner_strip
from wm_robotics.rollout import random_policy, run_episode

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def position_episode(steps, seed=0):
    """Positions that are the running sum of the actions, starting at 0."""
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, 1)).astype(np.float32)
    return {"obs/proprio": np.concatenate([[[0.0]], actions.cumsum(0)]).astype(np.float32), "action": actions,
            "reward": np.ones(steps, np.float32)}


def test_bad_context_horizon_and_episodes_are_refused_with_the_cause():
    episode = position_episode(6)
    with pytest.raises(ValueError, match="context must be at least 1 real step .*got 0"):
        imagine_episode(PositionModel(), episode, lambda a: a, context=0)
    with pytest.raises(ValueError, match="horizon must be a positive number of steps or None, got 0"):
        imagine_episode(PositionModel(), episode, lambda a: a, context=2, horizon=0)
    with pytest.raises(ValueError, match=r"reads observations \['proprio'\] but the episode has no \['obs/proprio'\]"):
        imagine_episode(PositionModel(), {"obs/pixels": episode["obs/proprio"], "action": episode["action"],
                                          "reward": episode["reward"]}, lambda a: a)
    with pytest.raises(ValueError, match="episode actions have 2 dims, the model 1"):
        imagine_episode(PositionModel(), {**episode, "action": np.zeros((6, 2), np.float32)}, lambda a: a)


class StartRecordingModel(PositionModel):
    """The exact position model, noting the is_first flags observe gets."""

    def observe(self, obs, action, is_first, state=None):
        self.is_first = is_first.clone()
        return super().observe(obs, action, is_first, state)


def test_only_the_reset_step_is_an_episode_start():
    model = StartRecordingModel()
    imagine_episode(model, position_episode(5), lambda a: a, context=2, horizon=2)
    assert model.is_first.tolist() == [[True, False, False, False, False, False]]


def test_without_a_horizon_one_rollout_runs_to_the_episode_end():
    episode = position_episode(9)
    result = imagine_episode(PositionModel(), episode, lambda a: a, context=3, horizon=None)
    assert result.anchors == [2] and result.horizon.tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]
    np.testing.assert_allclose(result.latent_error, 0, atol=1e-6)
    biased = imagine_episode(PositionModel(), episode, lambda a: a + 0.1, context=3, horizon=None)
    np.testing.assert_allclose(biased.proprio_error[3:], 0.1 * np.arange(1, 8), rtol=1e-5)  # never re-anchored
    np.testing.assert_allclose(biased.proprio_error[1:3], 0.0, atol=1e-6)  # context: filtered, not imagined


class PixelPositionModel(PositionModel):
    """The position model with a one-pixel grey image decoder: the position's fraction part as brightness."""

    def decode(self, state, keys=None):
        return {"proprio": state["x"], "pixels": state["x"][..., None, None].remainder(1.0).expand(
            *state["x"].shape[:-1], 1, 1, 3)}


def test_decoded_pixels_are_frames_of_the_shown_states():
    episode = position_episode(6)
    result = imagine_episode(PixelPositionModel(), episode, lambda a: a + 0.25, context=2, horizon=2)
    assert result.pixels.shape == (7, 1, 1, 3) and result.pixels.dtype == np.uint8
    shown = episode["obs/proprio"][:, 0].astype(np.float64)
    shown[2:] += 0.25 * result.horizon[2:]  # each imagined step takes the action 0.25 too far
    expected = np.round(np.mod(shown, 1.0) * 255)
    np.testing.assert_allclose(result.pixels[:, 0, 0, 0], expected, atol=1)


def test_curve_panels_plot_the_errors_with_anchor_marks_and_the_text_beside_them(annotations, monkeypatch):
    made, panel = [], imagination_video.CurvePanel
    monkeypatch.setattr(imagination_video, "CurvePanel", lambda curves, size, title, marks=():
                        made.append((dict(curves), list(marks))) or panel(curves, size, title, marks))
    horizon = np.array([0, 0, 1, 2])
    result = Imagination(reward=np.array([0.0, 1.0, 2.0, 3.0]), pred_reward=np.array([0.5, 1.5, 2.5, 3.5]),
                         horizon=horizon, latent_error=horizon * 0.1, pixels=None, proprio_error=horizon * 0.2,
                         anchors=[1], posterior={})
    frames = imagination_frames(result, np.zeros((4, 8, 8, 3), np.uint8), size=64, title="ep")
    assert len(frames) == 4 and frames[0].shape == (64, 2 * 64 + 2, 3)  # real | error curves
    (curves, marks), = made
    assert list(curves) == ["latent RMS", "proprio MAE"] and marks == [1]
    np.testing.assert_array_equal(curves["proprio MAE"], horizon * 0.2)
    assert annotations[2] == ["ep", "step 2", "reward 2.00 (pred 2.50)", "imagined h=1"]
    annotations.clear()
    alone = imagination_frames(result, None, size=64, title="ep")  # no real frames: the curves alone
    assert alone[0].shape == (64, 64, 3) and annotations == [["ep", f"step {t}"] for t in range(4)]


@pytest.fixture(scope="module")
def untrained():
    """Untrained tiny payloads (a pixel-decoding RSSM, a proprio-only one) and two 6-step episodes observing both."""
    cfg = {mode: tiny_config(f"obs_mode={mode}", "+model.overrides.cnn_depth=4", "max_episode_steps=6")
           for mode in ("pixels", "proprio", "pixels+proprio")}
    made = {mode: envs.make_env(value["env"]["id"], **envs.env_kwargs(value)) for mode, value in cfg.items()}
    torch.manual_seed(0)
    payloads = {mode: untrained_payload(cfg[mode], made[mode]) for mode in ("pixels", "proprio")}
    env = made["pixels+proprio"]
    episodes = [run_episode(env, random_policy(env.action_space, seed), seed) for seed in (0, 1)]
    for env in made.values():
        env.close()
    return payloads, episodes


def test_export_refuses_zero_episodes_before_anything_else():
    with pytest.raises(ValueError, match="episodes must be a positive integer, got 0"):
        export_imagination_video({}, "never.gif", episodes=0)


@pytest.mark.parametrize("settings, message", [
    ({"out": "clip.avi"}, "video path must end in one of"), ({"context": 0}, "context must be at least 1 real step"),
    ({"horizon": 0}, "horizon must be a positive number"),
    ({"planner_steps": [0], "planner": "policy"}, "unknown planner 'policy' for the planner view"),
    ({"source": [], "task": "wm_robotics/cartpole-swingup-v0"}, "task and max_episode_steps set the live episodes"),
    ({"source": [], "max_episode_steps": 20}, "with source= the episodes come from the files"),
    ({"size": 0}, r"size \(a panel side in pixels\) must be a positive integer, got 0")])
def test_export_checks_its_settings_before_it_loads_or_plays_anything(settings, message):
    with pytest.raises(ValueError, match=message):  # an empty payload: the checkpoint is not even read yet
        export_imagination_video({}, **{"out": "clip.mp4", **settings})


def test_export_refuses_zero_live_episode_steps(untrained, tmp_path):
    payloads, _ = untrained
    with pytest.raises(ValueError, match="max_episode_steps must be a positive integer"):
        export_imagination_video(payloads["proprio"], tmp_path / "clip.mp4", max_episode_steps=0)
    assert not (tmp_path / "clip.mp4").exists()


def test_export_titles_each_episode_and_prints_the_error_of_its_imagined_steps(untrained, annotations, monkeypatch,
                                                                             capsys, tmp_path):
    payloads, episodes = untrained
    results, frames = [], imagination_video.imagination_frames
    monkeypatch.setattr(imagination_video, "imagination_frames",
                        lambda result, *args: results.append(result) or frames(result, *args))
    export_imagination_video(payloads["pixels"], tmp_path / "clip.gif", source=episodes, context=2, horizon=3,
                             size=64, device="cpu")
    assert [lines[0] for lines in annotations[::3]] == ["episode 0"] * 7 + ["episode 1"] * 7
    printed = capsys.readouterr().out.splitlines()
    for result, line in zip(results, printed):
        error = result.latent_error[result.horizon > 0].mean()
        assert line.endswith(f"mean latent RMS error of the imagined steps {error:.3f}"), line
        assert error != pytest.approx(result.latent_error.mean(), abs=1e-3)  # the context steps would lower it


def test_export_imagines_with_its_seed_and_says_once_that_a_model_has_no_pixel_decoder(untrained, monkeypatch,
                                                                                       capsys, tmp_path):
    payloads, episodes = untrained
    results, frames = [], imagination_video.imagination_frames
    monkeypatch.setattr(imagination_video, "imagination_frames",
                        lambda result, *args: results.append(result) or frames(result, *args))
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        export_imagination_video(payloads["proprio"], tmp_path / "clip.gif", source=episodes, seed=3, context=2,
                                 horizon=3, size=64, device="cpu")
        assert capsys.readouterr().out.count("has no pixel decoder") == 1
    np.testing.assert_array_equal(results[0].latent_error, results[2].latent_error)
    assert np.any(results[0].latent_error > 0)


def test_planner_strip_plans_afresh_at_each_step_and_shows_the_decoded_plan_with_its_reward(untrained, annotations,
                                                                                           monkeypatch):
    from wm_robotics.behaviors.cem import CEMPlanner
    from wm_robotics.models.rssm import RSSMWorldModel

    payloads, episodes = untrained
    model = agent_from_checkpoint(payloads["pixels"], torch.device("cpu")).model
    episode, log = episodes[0], []
    result = imagine_episode(model, episode, lambda a: a, context=2, horizon=3)
    reset, plan, imagine = CEMPlanner.reset, CEMPlanner.plan, RSSMWorldModel.imagine
    monkeypatch.setattr(CEMPlanner, "reset", lambda self, *a: log.append("reset") or reset(self, *a))

    def plan_recorded(self, *args):
        action = plan(self, *args)
        log.append(("plan", self.horizon, self.last_info["plan"].clone()))
        return action

    def imagine_recorded(self, state, horizon, actions=None, policy=None):
        out = imagine(self, state, horizon, actions=actions, policy=policy)
        if len(state["deter"]) == 1:  # the strip's own rollout of the plan
            log.append(("imagine", horizon, actions.clone()))
        return out

    monkeypatch.setattr(CEMPlanner, "plan", plan_recorded)
    monkeypatch.setattr(RSSMWorldModel, "imagine", imagine_recorded)
    strip = planner_strip(payloads["pixels"], torch.device("cpu"), result, episode["obs/pixels"], [1, 4],
                          planner="cem", horizon=2, size=64)
    assert strip.shape[:2] == (2 * 64 + 2, 3 * 64 + 2 * 2)
    assert [entry if entry == "reset" else entry[:2] for entry in log][-6:] == [
        "reset", ("plan", 2), ("imagine", 2)] * 2  # no warm start from the previous step's plan
    for planned, rolled in zip(log[-5::3], log[-4::3]):  # the strip shows the rollout of the plan, in order
        assert torch.equal(planned[2], rolled[2])
    plan_lines = [lines for lines in annotations if lines[0].startswith("h=")]
    assert [lines[0] for lines in plan_lines] == ["h=1", "h=2"] * 2
    assert all(len(lines) == 2 and lines[1].startswith("r ") for lines in plan_lines)


def test_a_planner_view_of_a_model_without_reward_is_refused_before_any_video_is_written(tmp_path):
    env, payload = untrained_goal_reacher()  # jepa_goal: pixels decoded by its probe, no reward head
    obs, _ = env.reset(seed=0)
    recorder = EpisodeRecorder(obs)
    for _ in range(4):
        action = env.action_space.sample()
        recorder.add(action, *env.step(action)[:4])
    env.close()
    with pytest.raises(ValueError, match="the planner view plans on predicted reward and the checkpoint's model has "
                                         "no reward head"):
        export_imagination_video(payload, tmp_path / "clip.mp4", source=[recorder.episode()], context=2, horizon=2,
                                 size=32, planner_steps=[0], planner="cem", planner_horizon=2)
    assert not list(tmp_path.iterdir())
