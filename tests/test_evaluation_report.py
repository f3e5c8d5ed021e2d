"""More of the evaluation report: what ``evaluate_returns`` plays and sums, the report's seeds, tasks and summary
statistics, goal-reaching on a goal task, and what ``scripts/evaluate.py`` checks before evaluating."""

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import wm_robotics.envs as envs
from tests.configs import ROOT, script_module, tiny_config, untrained_goal_reacher
from wm_robotics import evaluation
from wm_robotics.builders import untrained_payload
from wm_robotics.checkpoint import save_checkpoint
from wm_robotics.evaluation import ReturnReport, evaluate_checkpoint, evaluate_returns, write_report

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CountingEnv:
    """An episode of seed ``s`` lasts ``2 + s % 3`` steps; step ``t`` (from 0) pays ``10**t`` and observes ``t + 1``;
    its frames: ``pixels`` holds the step, ``render()`` a frame of 255s (told apart)."""

    def __init__(self, pixels: bool = True):
        self.pixels, self.seeds, self.actions = pixels, [], []

    def _obs(self):
        obs = {"proprio": np.array([self.t], np.float32)}
        if self.pixels:
            obs["pixels"] = np.full((2, 2, 3), self.t, np.uint8)
        return obs

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.t, self.length = 0, 2 + seed % 3
        return self._obs(), {}

    def step(self, action):
        self.actions.append(float(action[0]))
        reward, self.t = 10.0 ** self.t, self.t + 1
        return self._obs(), reward, False, self.t == self.length, {}

    def render(self):
        return np.full((2, 2, 3), 255, np.uint8)


class RecordingAgent:
    """Acts ``0.5`` and remembers each call: ``("reset", n)`` and ``("act", is_first, sample)``."""

    def __init__(self):
        self.calls = []

    def reset(self, num_envs):
        self.calls.append(("reset", num_envs))

    def act(self, batch, is_first, sample=True):
        assert batch["proprio"].shape == (1, 1)
        self.calls.append(("act", bool(is_first[0]), sample))
        return np.full((1, 1), 0.5, np.float32)


def test_evaluate_returns_sums_every_reward_of_each_episode_and_seeds_each_one_apart():
    env, agent = CountingEnv(), RecordingAgent()
    report = evaluate_returns(agent, env, 3, seed=4, sample=False)
    assert env.seeds == [4, 5, 6]  # episode i plays seed + i
    assert report.lengths == [3, 4, 2]  # 2 + seed % 3 steps
    assert report.returns == [111.0, 1111.0, 11.0]  # 10**0 + 10**1 + ...: every step's reward, the first included
    expected = []
    for length in report.lengths:  # a fresh agent state per episode, is_first on its first step only
        expected += [("reset", 1), ("act", True, False), *[("act", False, False)] * (length - 1)]
    assert agent.calls == expected
    assert report.frames == [] and report.episodes == []  # nothing recorded unless asked
    evaluate_returns(agent, env, 1, seed=0, sample=True)
    assert {call[2] for call in agent.calls[len(expected):] if call[0] == "act"} == {True}  # sample passed on


def test_evaluate_returns_records_the_first_episodes_frames_and_every_episode_as_arrays():
    env = CountingEnv()
    report = evaluate_returns(RecordingAgent(), env, 2, seed=1, record_first=True, record_episodes=True)
    # the reset frame, then one per step, of the first episode alone; the observed pixels, not render()
    assert [int(frame[0, 0, 0]) for frame in report.frames] == [0, 1, 2, 3]
    first, second = report.episodes
    np.testing.assert_array_equal(first["obs/proprio"][:, 0], [0, 1, 2, 3])  # the reset observation and each step's
    np.testing.assert_array_equal(first["reward"], [1, 10, 100])
    np.testing.assert_array_equal(first["action"][:, 0], [0.5, 0.5, 0.5])
    assert first["truncated"].tolist() == [False, False, True] and not first["terminated"].any()
    assert len(second["reward"]) == 4
    report = evaluate_returns(RecordingAgent(), CountingEnv(pixels=False), 1, seed=0, record_first=True)
    assert len(report.frames) == 3 and all((frame == 255).all() for frame in report.frames)  # no pixels: render()


def test_return_summary_is_over_the_episodes_with_the_population_std():
    summary = ReturnReport([1.0, 2.0, 6.0], [5, 5, 5]).summary()
    assert summary == {"return_mean": 3.0, "return_std": pytest.approx(np.sqrt(14 / 3)), "return_min": 1.0,
                       "return_max": 6.0, "episodes": 3, "returns": [1.0, 2.0, 6.0]}


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """An untrained RSSM checkpoint of the tiny cartpole-swingup run, with 8-step episodes."""
    folder = tmp_path_factory.mktemp("untrained")
    cfg = tiny_config("max_episode_steps=8")
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    torch.manual_seed(0)
    save_checkpoint(folder / "latest.pt", {**untrained_payload(cfg, env), "counters": {"env_steps": 0, "updates": 0}})
    env.close()
    return folder


def test_a_report_gives_its_seeds_the_task_evaluated_and_the_one_trained_on(untrained_run, monkeypatch):
    played, play = [], evaluation.evaluate_returns

    def recorded(*args, **kwargs):
        played.append((args[2:], kwargs, play(*args, **kwargs)))
        return played[-1][2]

    monkeypatch.setattr(evaluation, "evaluate_returns", recorded)
    report = evaluate_checkpoint(untrained_run, episodes=3, seed=7, device="cpu", env_id="cartpole-balance-v0",
                                 sample=True, open_loop=False, sensitivity=False, planner=None)
    [(args, kwargs, returns)] = played
    assert args == (3, 7) and kwargs["sample"] is True  # the episodes of the report's seed, sampled as asked
    assert report["seed"] == 7 and report["episode_seeds"] == [7, 8, 9] and report["sample"] is True
    assert report["env"] == "cartpole-balance-v0" and report["trained_env"] == "cartpole-swingup-v0"
    assert report["returns"] == returns.returns and report["lengths"] == [8, 8, 8] and report["episodes"] == 3
    assert report["return_mean"] == pytest.approx(np.mean(returns.returns))
    assert report["return_min"] == min(returns.returns) and report["return_max"] == max(returns.returns)
    assert report["acted_by"] == {"kind": "actor_critic"}
    assert report["open_loop"] is report["action_sensitivity"] is report["planner"] is None


def test_a_goal_energy_without_a_planner_is_refused_before_any_episode(untrained_run, monkeypatch):
    monkeypatch.setattr(evaluation, "evaluate_returns", lambda *a, **k: pytest.fail("episodes ran first"))
    with pytest.raises(ValueError, match="they need a planner"):
        evaluate_checkpoint(untrained_run, episodes=1, device="cpu", planner=None, goal_energy={"norm": "l1"})


def test_a_goal_energy_on_a_task_without_a_goal_is_refused_before_any_episode(untrained_run, monkeypatch):
    monkeypatch.setattr(evaluation, "evaluate_returns", lambda *a, **k: pytest.fail("episodes ran first"))
    with pytest.raises(ValueError, match="goal_energy sets how a planner reaches a goal, but cartpole-swingup-v0 has"):
        evaluate_checkpoint(untrained_run, episodes=1, device="cpu", planner="cem", goal_energy={"norm": "l1"})


def test_goal_episodes_plan_from_the_reports_seeds_for_the_steps_asked_for(tmp_path):
    env, payload = untrained_goal_reacher("max_episode_steps=6")
    save_checkpoint(tmp_path / "latest.pt", {**payload, "counters": {"env_steps": 0, "updates": 0}})
    report = evaluate_checkpoint(tmp_path, episodes=1, seed=3, device="cpu", open_loop=False, sensitivity=False,
                                 planner="cem", planner_steps=1, goal_episodes=3, goal_steps=2,
                                 planner_settings={"iterations": 1, "candidates": 8, "elites": 2, "horizon": 2})
    planner = report["planner"]
    assert report["acted_by"] == {"kind": "mpc", "objective": "goal", "actions": "uniform random"}
    assert planner["goal_episodes"] == 3 and planner["goal_steps"] == 2
    starts = [env.reset(seed=seed)[1]["goal_distance"] for seed in (3, 4, 5)]
    assert planner["start_distance"] == pytest.approx(starts)  # goal episode i: seed + i, its goal at reset
    assert planner["final_distance"] != pytest.approx(starts)  # two steps were taken
    radius = float(env.unwrapped.physics.named.model.geom_size["target", 0])
    assert planner["success_rate"] == np.mean([distance <= radius for distance in planner["final_distance"]])
    assert planner["goal_energy"]["fields"] == ["position"]  # the preset's goal energy, recorded
    env.close()


def test_the_script_names_an_unknown_task_in_one_line(untrained_run):
    result = subprocess.run([sys.executable, str(ROOT / "scripts/evaluate.py"), f"checkpoint={untrained_run}",
                             "task=cartpole-swingdown-v0"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "evaluate.py: unknown environment 'cartpole-swingdown-v0'; closest:" in result.stderr


def test_the_script_checks_the_report_path_before_reading_the_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")  # would fail as "not a wm_robotics checkpoint"
    result = subprocess.run([sys.executable, str(ROOT / "scripts/evaluate.py"), f"checkpoint={tmp_path / 'foreign.pt'}",
                             f"out={tmp_path / 'report.md'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "give a .json path" in result.stderr and "Traceback" not in result.stderr


def test_open_loop_windows_shrink_to_the_shortest_episode(untrained_run, monkeypatch):
    play = evaluation.evaluate_returns

    def second_cut_short(*args, **kwargs):  # as a task that terminates: the second episode ends after 5 steps
        report = play(*args, **kwargs)
        report.episodes[1] = {key: value[:6] if key.startswith("obs/") else value[:5]
                              for key, value in report.episodes[1].items()}
        report.lengths[1] = 5
        return report

    monkeypatch.setattr(evaluation, "evaluate_returns", second_cut_short)
    with pytest.warns(UserWarning, match=r"episodes have only 6 observations: open-loop windows shrunk to context 3 "
                                         r"\+ horizon 3"):
        report = evaluate_checkpoint(untrained_run, episodes=2, device="cpu", context=4, horizon=4,
                                     windows_per_episode=1, sensitivity=False, planner=None)
    assert report["lengths"] == [8, 5] and report["open_loop"]["context"] == 3
    assert len(report["open_loop"]["proprio_nmse"]) == 3


def test_the_video_shows_the_first_episode_and_the_report_names_it(untrained_run, tmp_path):
    report = evaluate_checkpoint(untrained_run, episodes=2, device="cpu", open_loop=False, sensitivity=False,
                                 planner=None, video=tmp_path / "clip.gif")
    assert report["video"] == str(tmp_path / "clip.gif")
    frames = iio.imread(tmp_path / "clip.gif")
    assert frames.shape[:3] == (9, 256, 256)  # the reset frame and one per step of the first episode alone
    assert iio.immeta(tmp_path / "clip.gif")["duration"] == 20  # ms: cartpole at repeat 2 plays 50 steps a second


def test_write_report_names_every_file_after_the_json_path_and_keeps_the_old_report_when_one_fails(tmp_path):
    from tests.test_report_text import REPORT

    written = write_report(REPORT, tmp_path / "seed3.json")
    assert [path.name for path in written] == ["seed3.json", "seed3.md", "seed3_open_loop.png", "seed3_sensitivity.png"]
    assert json.loads((tmp_path / "seed3.json").read_text()) == REPORT
    with pytest.raises(TypeError):  # a value JSON cannot write: the report on disk is still the whole old one
        write_report({**REPORT, "seconds": {"returns": object()}}, tmp_path / "seed3.json")
    assert json.loads((tmp_path / "seed3.json").read_text()) == REPORT
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in written)  # no temp files
    returns_only = write_report({**REPORT, "open_loop": None, "action_sensitivity": None}, tmp_path / "seed3.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["seed3.json", "seed3.md"] == [
        path.name for path in returns_only]  # the earlier report's plots would describe another evaluation


def test_compare_plots_each_task_apart_and_leaves_out_rows_no_report_has(tmp_path, capsys):
    script = script_module("evaluate")
    runs = []
    for name, task in [("a", "cartpole-swingup-v0"), ("b", "reacher-easy-v0")]:
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(f"seed: 0\nexperiment_name: dreamer\nenv:\n  id: {task}\n")
        (run / "metrics.csv").write_text("step,eval_return\n1000,100\n2000,200\n")
        runs.append(str(run))
    report = {"experiment": "dreamer", "env": "cartpole-swingup-v0", "env_steps": 1000, "return_mean": 5.0,
              "return_std": 1.0, "open_loop": None, "latent": None, "action_sensitivity": None, "planner": None}
    (tmp_path / "returns_only.json").write_text(json.dumps(report))
    script.compare(["--compare", *runs, str(tmp_path / "returns_only.json"), "--out", str(tmp_path / "c.png")])
    printed = capsys.readouterr().out
    assert (tmp_path / "c_cartpole-swingup.png").stat().st_size > 0 and (tmp_path / "c_reacher-easy.png").is_file()
    assert not (tmp_path / "c.png").exists()  # two tasks: one plot each, named after it
    report_rows = printed.split("metric")[1].splitlines()[2:]
    assert [row.split()[0] for row in report_rows] == ["env", "env", "return"]  # no rows of "-" alone
    assert report_rows[-1].split()[1:] == ["5.0", "±", "1.0"]  # mean ± sd over the report's episodes


def test_removing_a_bookkeeping_key_does_not_make_a_configuration():
    configuration = script_module("evaluate")._configuration
    assert configuration({"train_overrides": ["~video", "++eval_every=5", "model.lr=1e-3"]}) == "model.lr=1e-3"
    assert configuration({"train_overrides": ["~model.overrides.deter"]}) == "~model.overrides.deter"


def test_compare_plots_goal_task_runs_and_names_a_plot_it_cannot_draw_without_a_traceback(tmp_path, capsys):
    script = script_module("evaluate")
    runs = []
    for name, extra in [("goal", ""), ("online", ""), ("offline", "offline:\n  data: /data/x\n")]:
        run = tmp_path / name
        run.mkdir()
        task = "reacher-easy-goal-v1" if name == "goal" else "cartpole-swingup-v0"
        (run / "config.yaml").write_text(f"seed: 0\nexperiment_name: {name}\nenv:\n  id: {task}\n{extra}")
        (run / "metrics.csv").write_text("step,eval_return\n1000,100\n2000,200\n")
        runs.append(str(run))
    script.compare(["--compare", *runs, "--out", str(tmp_path / "c.png")])
    captured = capsys.readouterr()
    assert (tmp_path / "c_reacher-easy-goal.png").is_file()  # the v1 goal run under its own task name
    assert "no plot of cartpole-swingup: the runs mix online runs (env steps) and offline runs" in captured.err
