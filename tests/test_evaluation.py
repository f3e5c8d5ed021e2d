"""The evaluation report of a trained checkpoint (``scripts/evaluate.py``) and ``--compare``."""

import json
import re
import subprocess
import sys

import pytest
import torch
import yaml

from tests.configs import ROOT, script_module, tiny_config
from wm_robotics.checkpoint import CheckpointError
from wm_robotics.evaluation import evaluate_checkpoint, write_report
from wm_robotics.train import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    cfg = tiny_config("steps=120", "eval_every=60")
    Trainer(cfg, folder).run()
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))  # scripts/train.py writes it; Trainer alone does not
    return folder


@pytest.mark.parametrize("bad, message", [("goal_energy=l1", "goal_energy must be a dict"),
                                          ("out=report.md", "give a .json path")])
def test_evaluate_script_rejects_bad_arguments_before_evaluating(run, tmp_path, bad, message):
    result = subprocess.run([sys.executable, str(ROOT / "scripts/evaluate.py"), f"checkpoint={run}", bad],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_planner_setting_fails_before_any_episode(run, tmp_path, monkeypatch):
    monkeypatch.setattr("wm_robotics.evaluation.evaluate_returns", lambda *a, **k: pytest.fail("episodes ran first"))
    with pytest.raises(ValueError, match=r"unknown mppi planner settings \['candidates'\]; "
                                         r"valid settings: .*'samples'"):
        evaluate_checkpoint(run, episodes=1, device="cpu", planner_settings={"candidates": 8})
    with pytest.raises(ValueError, match=r"video path must end in one of \('.mp4', '.gif'\), got 'clip.avi'"):
        evaluate_checkpoint(run, episodes=1, device="cpu", video=tmp_path / "clip.avi")
    with pytest.raises(ValueError, match="give a .json path"):
        write_report({}, tmp_path / "report.md")


def test_evaluate_script_writes_report_markdown_and_plots(run, tmp_path):
    out = tmp_path / "eval" / "report.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts/evaluate.py"), f"checkpoint={run}", "episodes=2",
                             "context=4", "horizon=6", "planner_steps=3", "torch_threads=1", f"out={out}",
                             "planner_settings={iterations:2,samples:64}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "return" in result.stdout and "planner mppi" in result.stdout
    report = json.loads(out.read_text())
    assert {"checkpoint", "env", "trained_env", "experiment", "model_kind", "env_steps", "return_mean",
            "return_std", "returns", "episode_seeds", "open_loop", "latent", "action_sensitivity", "planner",
            "seconds"} <= set(report)
    assert report["env_steps"] == 120 and len(report["returns"]) == report["episodes"] == 2
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert report["train_seed"] == cfg["seed"] and report["precision"] == "fp32"
    assert report["train_overrides"] is None  # made by Trainer, not scripts/train.py: not recorded
    assert report["train_config"] == cfg  # the training config, untouched by the planner settings given here
    assert report["checkpoint"] == str((run / "checkpoints" / "latest.pt").resolve()) and report["sample"] is False
    open_loop = report["open_loop"]
    assert len(open_loop["proprio_nmse"]) == len(open_loop["reward_mae"]) == 6 and open_loop["windows"] == 4
    sensitivity = report["action_sensitivity"]
    assert {"features", "proprio"} == set(sensitivity["model"]) and sensitivity["ratio"]["proprio"] >= 0
    assert report["planner"]["ms_per_action"] > 0 and report["planner"]["success_rate"] is None
    assert report["planner"]["settings"] == {"iterations": 2, "samples": 64}
    markdown = (out.parent / "report.md").read_text()
    assert "| return |" in markdown and "## Open-loop error vs horizon" in markdown
    assert (out.parent / "report_open_loop.png").stat().st_size > 0
    assert (out.parent / "report_sensitivity.png").stat().st_size > 0


def test_wrong_task_or_checkpoint_gives_clear_error(run, tmp_path):
    with pytest.raises(ValueError, match=r"task walker-walk-v0 does not fit.*cartpole-swingup-v0.*\(5,\).*\(24,\)"):
        evaluate_checkpoint(run, episodes=1, device="cpu", env_id="walker-walk-v0")
    with pytest.raises(ValueError, match="episodes must be at least 1, got 0"):
        evaluate_checkpoint(run, episodes=0, device="cpu")
    message = "planner_steps and goal_steps must be at least 1 and goal_episodes at least 0, got"
    with pytest.raises(ValueError, match=f"{message} 0, None and 2"):
        evaluate_checkpoint(run, episodes=1, device="cpu", planner_steps=0)
    with pytest.raises(ValueError, match=f"{message} 10, 0 and 2"):  # would judge success on the reset state
        evaluate_checkpoint(run, episodes=1, device="cpu", goal_steps=0)
    with pytest.raises(ValueError, match="they need a planner"):
        evaluate_checkpoint(run, episodes=1, device="cpu", planner=None, planner_settings={"samples": 8})
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a wm_robotics checkpoint"):
        evaluate_checkpoint(tmp_path / "foreign.pt", episodes=1, device="cpu")


def test_compare_prints_runs_side_by_side_and_plots(run, tmp_path, capsys):
    script = script_module("evaluate")
    script.compare(["--compare", str(run), str(run), "--out", str(tmp_path / "compare.png")])
    printed = capsys.readouterr().out
    assert "final eval" in printed and "cartpole-swingup" in printed and "TD-MPC2 839" in printed
    assert (tmp_path / "compare.png").stat().st_size > 0


def test_compare_aggregates_the_seeds_of_each_configuration(tmp_path, capsys):
    script = script_module("evaluate")
    paths = []
    for name, precision, extra, mean in [("a", "fp32", [], 780.0), ("b", "fp32", ["device=cuda"], 820.0),
                                         ("c", "fp32", [], 840.0), ("d", "fp32", ["torch_threads=1"], 900.0),
                                         ("e", "bf16", ["precision=bf16"], 850.0),
                                         ("f", "fp32", ["model.lr=1e-3"], 700.0),
                                         ("g", "fp32", ["+model.lr=1e-3", "seed=7"], 710.0)]:
        report = {"experiment": "tdmpc_cpu", "precision": precision, "env": "cartpole-swingup-v0",
                  "env_steps": 100_000, "return_mean": mean, "return_std": 1.0,
                  "train_overrides": ["experiment=tdmpc_cpu", f"seed={ord(name)}", *extra]}
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report))
    script.compare(["--compare", *map(str, paths)])
    printed = capsys.readouterr().out
    assert re.search(r"training overrides +preset +preset", printed) and "model.lr=1e-3" in printed
    aggregates = printed.split("95% bootstrap CI of the mean")[1].strip().splitlines()[1:]
    assert len(aggregates) == 2 and "note" not in printed  # the bf16 seed alone is not a group
    cells = aggregates[0].split()
    assert cells[:7] == ["tdmpc_cpu", "fp32", "preset", "cartpole-swingup-v0", "100,000", "4", "835.0"]
    assert cells[7:9] == ["50.0", "830.0"]  # sd; IQM = the mean of the middle two of four
    assert aggregates[1].split()[:7] == ["tdmpc_cpu", "fp32", "model.lr=1e-3", "cartpole-swingup-v0", "100,000",
                                         "2", "705.0"]  # model.lr=1e-3 given with and without "+"
    # a resume may repeat or change a key: the last value counts; bookkeeping keys do not make a configuration
    given = ["model.lr=1e-3", "seed=1", "+model.lr=2e-3", "~model.x", "offline.log_every=5", "device=cuda"]
    assert script._configuration({"train_overrides": given}) == "model.lr=2e-3 ~model.x"
    assert script._configuration({"train_overrides": ["torch_threads=2"]}) == "preset"
    assert script._configuration({}) == "-"
    # a changed preset default counts by its recorded value: given by hand or by the preset, it is one configuration
    by_hand = {"train_overrides": ["pretrain_updates=2500"]}
    by_preset = {"train_overrides": ["seed=4"], "train_config": {"pretrain_updates": 2500}}
    assert script._configuration(by_hand) == script._configuration(by_preset) == "pretrain_updates=2500"
    assert script._configuration({"train_overrides": ["pretrain_updates=0"], "train_config": {"pretrain_updates": 0}}) \
        == "preset"
    assert script._task_cell({"env": "a-v0", "trained_env": "b-v0"}) == "a-v0 (trained on b-v0)"
    older = {"experiment": "tdmpc_cpu", "env": "cartpole-swingup-v0", "env_steps": 100_000, "return_mean": 760.0,
             "return_std": 1.0}  # written before reports recorded the training precision and overrides
    paths.append(tmp_path / "older.json")
    paths[-1].write_text(json.dumps(older))
    script.compare(["--compare", *map(str, paths)])
    assert ("note: 1 tdmpc_cpu report(s) on cartpole-swingup-v0 at 100,000 steps do not record their training "
            "precision or overrides") in capsys.readouterr().out


def test_compare_keeps_sampled_evaluations_and_repeated_seeds_out_of_an_aggregate(tmp_path, capsys):
    script = script_module("evaluate")

    def report(name: str, seed: int, sample: bool, mean: float) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"experiment": "tdmpc_cpu", "precision": "fp32", "env": "cartpole-swingup-v0",
                                    "env_steps": 100_000, "return_mean": mean, "return_std": 1.0, "train_seed": seed,
                                    "sample": sample, "train_overrides": [f"seed={seed}"]}))
        return str(path)

    paths = [report("a", 0, False, 800.0), report("b", 1, False, 820.0), report("c", 0, True, 400.0),
             report("d", 1, True, 420.0)]
    script.compare(["--compare", *paths])
    aggregates = capsys.readouterr().out.split("95% bootstrap CI of the mean")[1].strip().splitlines()[1:]
    assert [row.split()[:2] for row in aggregates] == [["tdmpc_cpu", "fp32"], ["tdmpc_cpu", "(sampled"]]
    assert "810.0" in aggregates[0] and "410.0" in aggregates[1]
    script.compare(["--compare", *paths, report("e", 0, False, 805.0)])  # seed 0 evaluated twice
    printed = capsys.readouterr().out
    assert "has several reports of training seed(s) [0]: not aggregated" in printed and "810.0" not in printed
    for name, seed, samples, mean in [("f", 2, 512, 830.0), ("g", 3, 512, 850.0), ("h", 2, 16, 300.0),
                                      ("i", 3, 16, 320.0)]:  # h, i: played with planner_settings={samples: 16}
        path = tmp_path / f"{name}.json"
        trained = {"behavior": {"settings": {"samples": 512, "iterations": 6}}}
        path.write_text(json.dumps({"experiment": "tdmpc_cpu", "precision": "fp32", "env": "cartpole-swingup-v0",
                                    "env_steps": 100_000, "return_mean": mean, "return_std": 1.0, "train_seed": seed,
                                    "train_overrides": [f"seed={seed}"], "train_config": trained,
                                    "acted_by": {"kind": "mpc", "planner": "mppi",
                                                 "settings": {"samples": samples, "iterations": 6}}}))
        paths.append(str(path))
    script.compare(["--compare", *paths[-4:]])
    aggregates = capsys.readouterr().out.split("95% bootstrap CI of the mean")[1].strip().splitlines()[1:]
    assert [row.split()[:4] for row in aggregates] == [["tdmpc_cpu", "fp32", "preset", "cartpole-swingup-v0"],
                                                       ["tdmpc_cpu", "(played", "with", "samples=16)"]]
    assert "840.0" in aggregates[0] and "310.0" in aggregates[1]


def test_compare_draws_runs_of_another_precision_or_recipe_apart(tmp_path, capsys):
    script = script_module("evaluate")
    runs = []
    for name, seed, extra in [("a", 0, []), ("b", 1, []), ("c", 0, ["precision=bf16"]), ("d", 1, ["model.lr=1e-3"])]:
        run = tmp_path / name
        run.mkdir()
        precision = "bf16" if extra == ["precision=bf16"] else "fp32"
        (run / "config.yaml").write_text(yaml.safe_dump(
            {"experiment_name": "tdmpc_cpu", "env": {"id": "cartpole-swingup-v0"}, "seed": seed,
             "precision": precision, "command_overrides": [f"seed={seed}", *extra]}))
        (run / "metrics.csv").write_text("step,eval_return\n10000,100\n")
        runs.append(str(run))
    script.compare(["--compare", *runs, "--out", str(tmp_path / "compare.png")])
    printed = capsys.readouterr().out
    labels = [line.split()[1:4] for line in printed.splitlines() if line.split()[:1] in (["a"], ["b"], ["c"], ["d"])]
    assert labels == [["tdmpc_cpu", "cartpole-swingup", "0"], ["tdmpc_cpu", "cartpole-swingup", "1"],
                      ["tdmpc_cpu", "bf16", "cartpole-swingup"], ["tdmpc_cpu", "[model.lr=1e-3]", "cartpole-swingup"]]
    assert "note" not in printed


def test_a_report_is_reproducible_shrinks_long_windows_and_times_the_steps_asked_for(run):
    # an RSSM samples its posterior and, with sample=True, its actions: the report seeds torch itself
    settings = dict(episodes=1, device="cpu", sample=True, sensitivity=False, context=30, horizon=40,
                    windows_per_episode=1, planner_steps=3, goal_episodes=0,
                    planner_settings={"iterations": 1, "samples": 16, "elites": 4})
    reports = []
    for _ in range(2):
        with pytest.warns(UserWarning, match="episodes have only 21 observations: open-loop windows shrunk to "
                                             "context 9 \\+ horizon 12"):
            reports.append(evaluate_checkpoint(run, **settings))
    first, second = reports
    assert first["returns"] == second["returns"] and first["open_loop"] == second["open_loop"]
    assert first["sample"] is True and first["lengths"] == [20] and len(first["open_loop"]["reward_mae"]) == 12
    assert first["planner"]["actions_timed"] == 3
    assert first["planner"]["success_rate"] is None and first["planner"]["goal_episodes"] == 0
