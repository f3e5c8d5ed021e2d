"""Entry points run in-process with their expensive parts replaced: settings reach the work, bad settings are refused
before any of it, episodes follow the seeds and action repeat asked for."""

import sys
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.configs import composed, script_module


class _Step:
    def __init__(self, reward, last):
        self.reward, self._last, self.observation = reward, last, {"position": np.zeros(2)}

    def last(self):
        return self._last


class _Env:
    """Five steps of reward 1, 2, 3, 4, 5; stepping past the end fails the test."""

    def __init__(self, seed):
        self.seed, self.steps, self.actions = seed, 0, []
        self.physics = SimpleNamespace(data=SimpleNamespace(qpos=np.zeros(2)))

    def reset(self):
        return _Step(None, False)

    def step(self, action):
        assert self.steps < 5, "stepped past the episode's end"
        self.steps += 1
        self.actions.append(float(action[0]))
        return _Step(float(self.steps), self.steps == 5)


class _Controller:
    action_repeat, planner_settings, device = 2, {}, "cpu"

    def __init__(self, payload, **kwargs):
        self.kwargs, self.count = kwargs, 0
        self.obs_shapes = {key: () for key in payload["config"]["obs_mode"].split("+")}
        self.render_kwargs = payload.get("render_kwargs")

    def reset(self):
        self.count = 0

    def act(self, observation):
        self.count += 1
        return np.array([float(self.count)])


def _run_controller(monkeypatch, config, *args, render_kwargs=None):
    script, envs = script_module("run_controller"), []
    recorded = {} if render_kwargs is None else {"render_kwargs": render_kwargs}
    monkeypatch.setattr(script, "load_checkpoint", lambda path: {"config": config, **recorded})
    monkeypatch.setattr(script, "MPCController", _Controller)
    monkeypatch.setattr(script.suite, "load", lambda domain, task, task_kwargs: envs.append(_Env(task_kwargs["random"]))
                        or envs[-1])
    monkeypatch.setattr(sys, "argv", ["run_controller.py", "ckpt", *args])
    script.main()
    return envs


PROPRIO = {"obs_mode": "proprio", "env": {"id": "cartpole-swingup-v0"}}


def test_run_controller_repeats_each_action_sums_rewards_and_seeds_episodes_in_turn(monkeypatch, capsys):
    envs = _run_controller(monkeypatch, PROPRIO, "--episodes", "2", "--seed", "7", "--threads", "1")
    assert [env.seed for env in envs] == [7, 8]
    assert envs[0].actions == [1.0, 1.0, 2.0, 2.0, 3.0]  # repeat 2, cut at the episode's end
    out = capsys.readouterr().out
    assert "episode 0: return 15.0" in out and "episode 1: return 15.0" in out
    assert "return 15.0 ± 0.0 over 2 episodes" in out


@pytest.mark.parametrize("obs_mode, pixels_only", [("pixels", True), ("pixels+proprio", False)])
def test_run_controller_renders_a_pixel_models_frames_with_its_render_kwargs(monkeypatch, capsys, obs_mode,
                                                                              pixels_only):
    script, wrapped, rendered = script_module("run_controller"), [], []

    class Wrapper:  # dm_control's pixels.Wrapper renders at every step it forwards
        def __init__(self, env, **kwargs):
            self.env = env
            wrapped.append(kwargs)

        def step(self, action):
            rendered.append(self.env.steps + 1)
            return self.env.step(action)

        def __getattr__(self, name):
            return getattr(self.env, name)

    monkeypatch.setattr(script.pixels, "Wrapper", Wrapper)
    render_kwargs = {"height": 8, "width": 8, "camera_id": 1}
    envs = _run_controller(monkeypatch, {"obs_mode": obs_mode, "env": {"id": "cartpole-swingup-v0"}},
                           "--episodes", "2", render_kwargs=render_kwargs)
    assert wrapped == [{"pixels_only": pixels_only, "render_kwargs": render_kwargs}] * 2 and len(envs) == 2
    assert rendered == [2, 4] * 2  # repeat 2: the first step of each action is not rendered, nor step 5 (the end)
    assert "return 15.0 ± 0.0 over 2 episodes" in capsys.readouterr().out


@pytest.mark.parametrize("config, shown", [
    ({"obs_mode": "pixels", "env": {"id": "cartpole-swingup-v0"}}, "(obs_mode=pixels) does not record how its frames"),
    ({"obs_mode": "proprio", "env": {"id": "reacher-easy-goal-v1"}}, "the goal task reacher-easy-goal-v1"),
])
def test_run_controller_refuses_checkpoints_it_cannot_drive(monkeypatch, capsys, config, shown):
    with pytest.raises(SystemExit) as exit_:
        _run_controller(monkeypatch, config)
    assert exit_.value.code == 2 and shown in capsys.readouterr().err


def test_run_controller_refuses_bad_settings_before_loading_the_checkpoint(monkeypatch, capsys):
    script = script_module("run_controller")
    monkeypatch.setattr(script, "load_checkpoint", lambda path: pytest.fail("loaded the checkpoint"))
    for args, message in ((["--episodes", "0"], "--episodes must be at least 1, got 0"),
                          (["--set", "=3"], "--set takes KEY=VALUE, got '=3'"),
                          (["--threads", "0"], "--threads must be a positive integer or null for torch's default")):
        monkeypatch.setattr(sys, "argv", ["run_controller.py", "ckpt", *args])
        with pytest.raises(SystemExit):
            script.main()
        assert message in capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")  # restores the threads the script sets
def test_tau_sweep_refuses_a_markdown_out_before_the_sweep_and_passes_its_settings(monkeypatch, tmp_path, capsys):
    script, calls = script_module("tau_sweep"), []
    monkeypatch.setattr(script, "temperature_sweep", lambda *args, **kwargs: calls.append((args, kwargs)) or {"r": 1})
    monkeypatch.setattr(script, "markdown", lambda result: "| table |")
    monkeypatch.setattr(sys, "argv", ["tau_sweep.py", "run", "--out", str(tmp_path / "sweep.md")])
    with pytest.raises(SystemExit):
        script.main()
    assert "give a .json path" in capsys.readouterr().err and not calls and not list(tmp_path.iterdir())
    monkeypatch.setattr(sys, "argv", ["tau_sweep.py", "run", "--temperatures", "0.5", "2", "--generations", "3",
                                      "--episodes", "4", "--seed", "5", "--device", "cpu", "--threads", "3",
                                      "--out", str(tmp_path / "sweep.json")])
    script.main()
    assert calls == [(("run", [0.5, 2.0], 3, 4), {"seed": 5, "device": "cpu"})] and torch.get_num_threads() == 3
    assert (tmp_path / "sweep.json").read_text() == '{\n  "r": 1\n}' and (tmp_path / "sweep.md").exists()
    monkeypatch.setattr(sys, "argv", ["tau_sweep.py", "run", "--threads", "-2"])
    with pytest.raises(SystemExit):
        script.main()
    assert "--threads must be a positive integer or null for torch's default, got -2" in capsys.readouterr().err
    assert len(calls) == 1


def test_plot_runs_script_passes_the_budget_and_splits_seeds(monkeypatch, tmp_path, capsys):
    script, calls = script_module("plot_runs"), []
    monkeypatch.setattr(script, "eval_table", lambda runs: "table")
    monkeypatch.setattr(script, "plot_runs", lambda *args: calls.append(args) or "p.png")
    monkeypatch.setattr(sys, "argv", ["plot_runs.py", "a=r0,r1", "b=r2", "--task", "pendulum-swingup", "--out", "p.png",
                                      "--budget", "500k"])
    script.main()
    assert calls == [({"a": ["r0", "r1"], "b": ["r2"]}, "pendulum-swingup", "p.png", "500k")]
    assert "no published 500k numbers for task 'pendulum-swingup'" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["plot_runs.py", "runs/seed0", "--task", "cartpole-swingup", "--out", "p.png"])
    with pytest.raises(SystemExit):
        script.main()
    assert "expected LABEL=RUN[,RUN...], got 'runs/seed0'" in capsys.readouterr().err and len(calls) == 1


def test_plot_runs_script_names_a_missing_run_in_one_line_before_printing_anything(monkeypatch, tmp_path, capsys):
    script = script_module("plot_runs")
    monkeypatch.setattr(sys, "argv", ["plot_runs.py", f"a={tmp_path / 'gone'}", "--task", "cartpole-swingup",
                                      "--out", str(tmp_path / "p.png")])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and "gone" in captured.err and "Traceback" not in captured.err
    assert captured.out == "" and not (tmp_path / "p.png").exists()


def _episode(steps):
    """Frames of distinct greys (a GIF merges equal neighbours), reward 1 per step."""
    pixels = np.arange(steps + 1, dtype=np.uint8)[:, None, None, None] * 40 + np.zeros((1, 8, 8, 3), np.uint8)
    return {"obs/pixels": pixels, "action": np.zeros((steps, 1), np.float32), "reward": np.ones(steps, np.float32)}


def test_export_video_writes_frames_at_the_size_and_fps_asked_for(monkeypatch, tmp_path, annotations):
    script = script_module("export_video")
    monkeypatch.setattr(script, "_episodes", lambda cfg: [_episode(2), _episode(3)])
    cfg = OmegaConf.create(composed([f"out={tmp_path / 'clip.gif'}", "size=16", "fps=10"], "export_video"))
    script.export(cfg)
    assert iio.imread(tmp_path / "clip.gif").shape == (3 + 4, 16, 16, 3)
    assert iio.immeta(tmp_path / "clip.gif")["duration"] == 100
    assert [lines[0] for lines in annotations] == ["episode 0"] * 3 + ["episode 1"] * 4


@pytest.mark.parametrize("setting, message", [("episodes=0", "episodes must be at least 1, got 0"),
                                              ("size=0", "size \\(a panel side in pixels\\) must be a positive")])
def test_export_video_refuses_bad_settings_before_any_work(monkeypatch, tmp_path, setting, message):
    script = script_module("export_video")
    monkeypatch.setattr(script, "export", lambda cfg: pytest.fail("exported"))
    cfg = OmegaConf.create(composed([setting, f"out={tmp_path / 'clip.mp4'}"], "export_video"))
    with pytest.raises(SystemExit, match=f"export_video.py: {message}"):
        script.main.__wrapped__(cfg)


def test_export_video_takes_the_first_episodes_of_a_folder_and_env_names_as_task(monkeypatch, tmp_path):
    script = script_module("export_video")
    for index in range(3):
        (tmp_path / f"episode-{index:06d}.npz").touch()
    monkeypatch.setattr(script, "load_episode", lambda path: path.name)
    cfg = OmegaConf.create(composed([f"source={tmp_path}", "episodes=2"], "export_video"))
    assert script._saved_episodes(cfg) == ["episode-000000.npz", "episode-000001.npz"]
    assert script._task_id("walker_walk") == "walker-walk-v0" and script._task_id("my-task-v3") == "my-task-v3"


@pytest.mark.parametrize("setting, message", [("episodes=0", "episodes must be at least 1, got 0"),
                                              ("video_size=0", "video_size \\(a panel side in pixels\\)")])
def test_collect_refuses_bad_settings_in_one_line_before_any_episode(monkeypatch, tmp_path, setting, message):
    script = script_module("collect")
    monkeypatch.setattr(script, "collect_episodes", lambda *args: pytest.fail("collected"))
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create(composed([setting, "obs_mode=pixels"], "collect"))
    with pytest.raises(SystemExit, match=f"collect.py: {message}"):
        script.main.__wrapped__(cfg)
    assert not list(tmp_path.iterdir())


def test_collect_writes_a_titled_video_at_the_fps_asked_for(monkeypatch, tmp_path):
    script, titles = script_module("collect"), []
    frames = script.episode_frames
    monkeypatch.setattr(script, "episode_frames",
                        lambda episode, size, title="": titles.append(title) or frames(episode, size, title))
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create(composed(["episodes=2", "max_episode_steps=2", "obs_mode=pixels", "video=e.gif", "fps=10",
                                     "video_size=64"], "collect"))
    script.main.__wrapped__(cfg)
    assert iio.imread(tmp_path / "e.gif").shape == (2 * 3, 64, 64, 3)
    assert iio.immeta(tmp_path / "e.gif")["duration"] == 100
    assert titles == ["episode 0", "episode 1"]
