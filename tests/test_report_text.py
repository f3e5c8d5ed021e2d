"""What an evaluation report says: its markdown tables, its sensitivity plot, the console summary and the
``--compare`` rows, on a hand-made report whose every number is known."""

import json

from tests.configs import script_module
from wm_robotics import evaluation
from wm_robotics.evaluation import markdown, plot_report

HORIZONS = list(range(1, 7))
REPORT = {
    "experiment": "jepa_goal", "env": "reacher-easy-goal-v1", "trained_env": "reacher-easy-goal-v1",
    "checkpoint": "runs/x/checkpoints/latest.pt", "model_kind": "JEPAWorldModel", "obs_mode": "proprio",
    "env_steps": 1000, "updates": 10, "return_mean": 500.0, "return_std": 12.5, "episodes": 3,
    "episode_seeds": [100, 101, 102], "acted_by": {"kind": "mpc", "planner": "cem", "settings": {"iterations": 2}},
    "latent": {"effective_rank": 1.2, "feature_dim": 16, "std_mean": 0.001, "std_min": 0.0, "collapsed": True},
    "action_sensitivity": {"horizons": [1, 2], "perturbation": "0.5", "windows": 2,
                           "model": {"proprio": [0.1, 0.2]}, "real": {"proprio": [0.2, 0.4]},
                           "model_mean": {"proprio": 0.15}, "real_mean": {"proprio": 0.3}, "ratio": {"proprio": 0.5}},
    "planner": {"planner": "cem", "ms_per_action": 12.0, "success_rate": 0.5, "goal_episodes": 4,
                "start_distance_mean": 0.3, "final_distance_mean": 0.05},
    "open_loop": {"horizons": HORIZONS, "proprio_nmse": [h / 10 for h in HORIZONS],
                  "reward_mae": [h / 100 for h in HORIZONS], "context": 5, "windows": 2,
                  "reconstruction": {"proprio_nmse": 0.01}},
}


def test_markdown_tables_give_every_number_in_its_place():
    text = markdown(REPORT)
    assert "| return | 500.0 ± 12.5 (3 episodes, seeds 100–102; cem: iterations 2) |" in text
    assert "| collapsed | yes |" in text and "| collapsed | no |" in markdown(
        {**REPORT, "latent": {**REPORT["latent"], "collapsed": False}})
    assert "| action sensitivity (proprio) | model 0.15, real 0.3, ratio 0.50 |" in text
    assert "| planner cem | 12.0 ms per action, success 0.50 over 4 episodes, goal distance 0.300 → 0.050 m |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows if row[2].isdigit()] == ["| 1", "| 2", "| 3", "| 5", "| 6",  # open loop
                                                                         "| 1", "| 2"]  # sensitivity
    assert "| 6 | 0.6 | 0.06 |" in text and "| filtered | 0.01 | - |" in text
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|---"):  # a separator has as many cells as its header
            assert line.count("---|") == lines[index - 1].count(" | ") + 1


def test_sensitivity_plot_draws_model_and_real_curves(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(evaluation, "_save", lambda figure, path: saved.append(figure) or path)
    plot_report(REPORT, tmp_path / "report")
    labels = [line.get_label() for line in saved[-1].axes[0].lines]
    assert labels == ["model proprio", "real proprio"]


def test_console_summary_gives_the_first_and_last_horizons():
    lines = script_module("evaluate")._summary(REPORT)
    assert "open-loop proprio_nmse: h=1 0.1, h=6 0.6; reward MAE h=1 0.01, h=6 0.06" in lines


def test_compare_gives_the_last_horizon_and_a_runs_best_evaluation(tmp_path, capsys):
    script = script_module("evaluate")
    (tmp_path / "report.json").write_text(json.dumps({**REPORT, "train_overrides": ["experiment=jepa_goal"]}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\nexperiment_name: dreamer\nenv:\n  id: cartpole-swingup-v0\n")
    (run / "metrics.csv").write_text("step,eval_return\n1000,100\n2000,500\n3000,300\n")
    script.compare(["--compare", str(tmp_path / "report.json"), "--out", str(tmp_path / "c.png")])
    rows = {line.split("  ")[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["proprio_nmse h=H"][-1] == "0.6" and rows["reward_mae h=H"][-1] == "0.06"
    assert rows["open loop: H, context"][-2:] == ["6,", str(REPORT["open_loop"]["context"])]  # what H is, per report
    script.compare(["--compare", str(run), "--out", str(tmp_path / "c.png")])
    [row] = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("run  dreamer")]
    assert row[4:7] == ["3,000", "300.0", "500.0"]  # env steps, final eval, best eval
