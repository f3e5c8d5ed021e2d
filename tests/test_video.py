"""Imagination videos: alignment of imagined steps, frame count and layout, fallback, bad input."""

import math
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from tests.configs import ROOT, tiny_config
from wm_robotics import imagination_video
from wm_robotics.agent import agent_from_checkpoint
from wm_robotics.behaviors.mppi import MPPIPlanner
from wm_robotics.checkpoint import FORMAT, CheckpointError, load_checkpoint
from wm_robotics.data.episodes import load_episode
from wm_robotics.imagination import decoded_frames, imagine_episode
from wm_robotics.imagination_video import export_imagination_video, planner_strip
from wm_robotics.models.base import WorldModel
from wm_robotics.train import Trainer
from wm_robotics.video import write_video

SIZE, STEPS = 64, 20  # panel side; the tiny config's max_episode_steps
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PositionModel(WorldModel):
    """Exact toy model: the state is the position, each action adds to it; decodes proprio, no pixels."""

    obs_keys, action_dim, feature_dim = ("proprio",), 1, 1

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def observe(self, obs, action, is_first, state=None):
        states = {"x": obs["proprio"].float()}  # (B, T, 1)
        return states, {"x": states["x"][:, -1]}

    def imagine(self, state, horizon, actions=None, policy=None):
        return {"x": state["x"].unsqueeze(1) + actions.cumsum(1)}, actions

    def features(self, state):
        return state["x"]

    def decode(self, state, keys=None):
        return {"proprio": state["x"]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny trained checkpoints: a pixel-decoding RSSM and a proprio-only one."""
    root = tmp_path_factory.mktemp("runs")
    for name, mode in [("pixels", "pixels"), ("proprio", "proprio")]:
        Trainer(tiny_config("steps=120", "eval_every=1000", f"obs_mode={mode}", "+model.overrides.cnn_depth=4"),
                root / name).run()
    return {name: load_checkpoint(root / name) for name in ("pixels", "proprio")} | {"root": root}


def test_imagined_steps_line_up_with_real_actions():
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 1)).astype(np.float32)
    episode = {"obs/proprio": np.concatenate([[[0.0]], actions.cumsum(0)]).astype(np.float32), "action": actions,
               "reward": np.ones(12, np.float32)}
    result = imagine_episode(PositionModel(), episode, lambda a: a, context=3, horizon=4)
    assert result.anchors == [2, 6, 10] and result.pixels is None and result.pred_reward is None
    assert result.horizon.tolist() == [0, 0, 0, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    np.testing.assert_allclose(result.latent_error, 0, atol=1e-6)
    np.testing.assert_allclose(result.proprio_error, 0, atol=1e-6)
    assert result.reward.tolist() == [0.0] + [1.0] * 12


def test_anchors_stay_inside_the_episode_and_a_short_episode_is_all_context():
    def episode(steps):
        actions = np.ones((steps, 1), np.float32)
        return {"obs/proprio": np.arange(steps + 1, dtype=np.float32)[:, None], "action": actions,
                "reward": np.ones(steps, np.float32)}

    result = imagine_episode(PositionModel(), episode(10), lambda a: a, context=3, horizon=4)
    assert result.anchors == [2, 6] and result.horizon.tolist() == [0, 0, 0, 1, 2, 3, 4, 1, 2, 3, 4]
    for horizon in (4, None):  # context past the episode's end: every step filtered, nothing imagined
        short = imagine_episode(PositionModel(), episode(4), lambda a: a, context=10, horizon=horizon)
        assert short.anchors == [] and short.horizon.tolist() == [0] * 5


def test_pixel_model_video_frames_layout_and_planner_strip(checkpoints, tmp_path):
    paths = export_imagination_video(checkpoints["pixels"], tmp_path / "clip.mp4", episodes=2, context=3, horizon=8,
                                     size=SIZE, device="cpu", planner_steps=[0, 5], planner_horizon=4)
    frames = iio.imread(paths[0])
    assert frames.shape == (2 * (STEPS + 1), SIZE, 3 * SIZE + 2 * 2, 3)  # real | imagined | |error|
    assert paths[1].name == "clip_planner.png"
    assert iio.imread(paths[1]).shape[:2] == (2 * SIZE + 2, 5 * SIZE + 4 * 2)  # 2 steps × (real + 4 plan frames)
    again = export_imagination_video(checkpoints["pixels"], tmp_path / "clip.mp4", episodes=1, context=3, horizon=8,
                                     size=SIZE, device="cpu")
    assert again == [tmp_path / "clip.mp4"] and not paths[1].exists()  # the earlier strip showed the earlier plans


def test_missing_pixel_decoder_falls_back_to_error_curves(checkpoints, tmp_path, capsys):
    export_imagination_video(checkpoints["proprio"], tmp_path / "clip.gif", episodes=1, size=SIZE, device="cpu",
                             planner_steps=[0])
    out = capsys.readouterr().out
    assert "has no pixel decoder" in out and "real frames | latent prediction error" in out
    assert "planner view skipped" in out
    assert iio.imread(tmp_path / "clip.gif").shape[:3] == (STEPS + 1, SIZE, 2 * SIZE + 2)  # real | curves
    saved = load_episode(next((checkpoints["root"] / "proprio" / "episodes").glob("*.npz")))  # no obs/pixels
    export_imagination_video(checkpoints["proprio"], tmp_path / "saved.gif", source=[saved], size=SIZE, device="cpu")
    assert "exporting the latent prediction error alone (the episode has no obs/pixels)" in capsys.readouterr().out
    assert iio.imread(tmp_path / "saved.gif").shape[:3] == (len(saved["action"]) + 1, SIZE, SIZE)  # curves alone


def test_planner_strip_plans_from_each_chosen_step_and_skips_steps_outside(checkpoints, annotations, capsys,
                                                                         monkeypatch):
    payload = checkpoints["pixels"]
    agent = agent_from_checkpoint(payload, torch.device("cpu"))
    episode = load_episode(next((checkpoints["root"] / "pixels" / "episodes").glob("*.npz")))
    result = imagine_episode(agent.model, episode, agent.behavior.from_env, context=3, horizon=8)
    starts, plan = [], MPPIPlanner.plan
    monkeypatch.setattr(MPPIPlanner, "plan",
                        lambda self, model, state: starts.append(state) or plan(self, model, state))
    real = episode["obs/pixels"]
    strip = planner_strip(payload, torch.device("cpu"), result, real, [0, 3, len(real)], horizon=2, size=SIZE)
    assert strip.shape[:2] == (2 * SIZE + 2, 3 * SIZE + 2 * 2)  # 2 rows: real | h=1 | h=2
    assert f"step {len(real)} is outside the episode (0..{len(real) - 1}), skipped" in capsys.readouterr().out
    assert [lines[0] for lines in annotations] == ["real step 0", "h=1", "h=2", "real step 3", "h=1", "h=2"]
    for step, state in zip((0, 3), starts):
        assert all(torch.equal(state[key], value[step:step + 1]) for key, value in result.posterior.items())


def test_live_episodes_take_consecutive_seeds_and_saved_ones_stop_at_episodes(checkpoints, tmp_path, monkeypatch):
    seeds, record = [], imagination_video.record_episode
    monkeypatch.setattr(imagination_video, "record_episode",
                        lambda agent, env, seed: seeds.append(seed) or record(agent, env, seed))
    export_imagination_video(checkpoints["proprio"], tmp_path / "live.gif", episodes=2, seed=5, size=SIZE,
                             device="cpu", max_episode_steps=4)
    assert seeds == [5, 6] and iio.imread(tmp_path / "live.gif").shape[0] == 2 * (4 + 1)
    saved = load_episode(next((checkpoints["root"] / "proprio" / "episodes").glob("*.npz")))
    export_imagination_video(checkpoints["proprio"], tmp_path / "saved.gif", source=[saved] * 3, episodes=2,
                             size=SIZE, device="cpu")
    assert iio.imread(tmp_path / "saved.gif").shape[0] == 2 * (len(saved["action"]) + 1)


def test_wrong_task_and_wrong_files_give_clear_errors(checkpoints, tmp_path):
    with pytest.raises(ValueError, match=r"trained on cartpole-swingup-v0 .* task 'walker-walk-v0' has observations"):
        export_imagination_video(checkpoints["proprio"], tmp_path / "x.mp4", task="walker-walk-v0", device="cpu")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        export_imagination_video({"format": FORMAT, "config": {}}, tmp_path / "x.mp4")
    episode = {"obs/proprio": np.zeros((3, 5), np.float32), "action": np.zeros((2, 1), np.float32)}
    with pytest.raises(ValueError, match=r"with pixels of shape \(64, 64, 3\), but episode 0 has"):
        export_imagination_video(checkpoints["pixels"], tmp_path / "x.mp4",
                                 source=[{**episode, "obs/pixels": np.zeros((3, 32, 32, 3), np.uint8)}])
    with pytest.raises(ValueError, match=r"unknown planner 'policy' for the planner view; "
                                         r"valid planners: \['cem', 'mppi'\]"):
        planner_strip({}, torch.device("cpu"), None, [], [0], planner="policy")


def test_gif_frame_delays_follow_fps(tmp_path):
    frames = np.arange(3, dtype=np.uint8)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3) * 50
    for fps, delay in ((15, 70), (20, 50), (25, 40), (50, 20)):  # the nearest hundredth of a second: 66.7 ms → 70
        assert iio.immeta(write_video(tmp_path / f"{fps}.gif", frames, fps))["duration"] == delay
    with pytest.raises(ValueError, match=r"at most 50 for a GIF \(use .mp4\), got 60"):
        write_video(tmp_path / "fast.gif", frames, 60)
    with pytest.raises(ValueError, match="fps must be positive, got 0"):
        write_video(tmp_path / "still.mp4", frames, 0)


def test_export_script_from_checkpoint_and_saved_episodes(checkpoints, tmp_path):
    run = checkpoints["root"] / "pixels"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/export_video.py"), f"checkpoint={run}", f"source={run / 'episodes'}",
         "episodes=1", f"size={SIZE}", f"out={tmp_path / 'clip.gif'}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    gif = iio.imread(tmp_path / "clip.gif")
    assert gif.shape[:3] == (STEPS + 1, SIZE, 3 * SIZE + 4)


C = np.array([0.1, 0.3], np.float32)


class DriftModel(WorldModel):
    obs_keys, action_dim, feature_dim = ("proprio",), 2, 2

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def observe(self, obs, action, is_first, state=None):
        x = obs["proprio"].float()
        return {"x": x}, {"x": x[:, -1]}

    def imagine(self, state, horizon, actions=None, policy=None):
        steps = torch.arange(1, horizon + 1, dtype=torch.float32)[:, None] * torch.as_tensor(C)
        return {"x": state["x"].unsqueeze(1) + actions.cumsum(1) + steps}, actions

    def features(self, state):
        return state["x"]

    def predict_reward(self, features):
        return features.sum(-1)

    def decode(self, state, keys=None):
        return {"proprio": state["x"]}


def test_imagination_errors_grow_exactly_with_steps_since_anchor():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (12, 2)).astype(np.float32)
    obs = np.concatenate([np.zeros((1, 2)), actions.cumsum(0)]).astype(np.float32)
    episode = {"obs/proprio": obs, "action": actions, "reward": np.arange(1, 13, dtype=np.float32)}
    res = imagine_episode(DriftModel(), episode, lambda a: a, context=3, horizon=4)
    h = np.array([0, 0, 0, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2])
    assert res.anchors == [2, 6, 10] and res.horizon.tolist() == h.tolist()
    np.testing.assert_allclose(res.latent_error, h * math.sqrt((0.1 ** 2 + 0.3 ** 2) / 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.proprio_error, h * 0.2, rtol=1e-5, atol=1e-6)
    assert res.reward.tolist() == list(range(13))
    np.testing.assert_allclose(res.pred_reward, obs.sum(-1) + h * 0.4, rtol=1e-5, atol=1e-5)


def test_decoded_pixels_become_the_nearest_uint8_level():
    frames = decoded_frames(torch.tensor([0.0, 100.6, 100.4, 254.9]) / 255)
    assert frames.dtype == np.uint8 and frames.tolist() == [0, 101, 100, 255]
