"""Learning-curve plots and tables: the budget's references, axes from zero, step headers, fresh output folders."""

import re

import numpy as np

from wm_robotics import plots
from wm_robotics.plots import eval_table, plot_runs, published_results


def _csv(path, rows):
    path.write_text("step,eval_return\n" + "".join(f"{step},{value}\n" for step, value in rows))
    return path


def test_plot_draws_the_references_of_the_budget_asked_for(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    run = _csv(tmp_path / "a.csv", [(10000, 100), (20000, 200)])
    for budget in ("500k", "1M"):
        plot_runs({"base": [run]}, "cartpole-swingup", tmp_path / "p.png", budget=budget)
        axis = figures[-1].axes[0]
        dashed = sorted(line.get_ydata()[0] for line in axis.lines[1:])
        assert dashed == sorted(published_results()[budget]["cartpole-swingup"].values())
        assert all(f"@ {budget}:" in text.get_text() for text in axis.texts) and axis.texts


def test_plot_starts_the_x_axis_at_zero_names_the_seeds_and_makes_the_output_folder(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    runs = [_csv(tmp_path / f"s{seed}.csv", [(50000, seed), (60000, 2 * seed)]) for seed in range(3)]
    out = plot_runs({"base": runs}, "cartpole-swingup", tmp_path / "new" / "deeper" / "p.png")
    assert out.exists() and out.stat().st_size > 0
    axis = figures[-1].axes[0]
    assert axis.get_xlim()[0] == 0
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["base (3 seeds)"]
    np.testing.assert_array_equal(axis.lines[0].get_ydata(), [1, 2])


def test_table_steps_are_sorted_and_fractional_thousands_kept(tmp_path):
    late = _csv(tmp_path / "late.csv", [(7500, 3), (12500, 4)])
    early = _csv(tmp_path / "early.csv", [(2500, 1), (5000, 2)])
    table = eval_table({"late": [late], "early": [early]})
    assert table.splitlines()[0] == "| run | 2.5k | 5k | 7.5k | 12.5k |"
    assert "| late, late | – | – | 3.0 | 4.0 |" in table and "| **early, mean** | 1.0 | 2.0 | – | – |" in table


def test_runs_of_another_task_or_of_two_tasks_are_refused_by_name(tmp_path):
    import pytest

    folders = {}
    for task in ("cartpole-swingup", "reacher-easy"):
        folder = tmp_path / task
        folder.mkdir()
        (folder / "config.yaml").write_text(f"env:\n  id: {task}-v0\n")
        _csv(folder / "metrics.csv", [(10000, 100), (20000, 200)])
        folders[task] = folder
    csv_alone = _csv(tmp_path / "alone.csv", [(10000, 100), (20000, 200)])  # names no task: taken as asked
    plot_runs({"a": [folders["cartpole-swingup"], csv_alone]}, "cartpole-swingup", tmp_path / "ok.png")
    for runs, task, trained in (([folders["cartpole-swingup"], folders["reacher-easy"]], "cartpole-swingup",
                                 "['cartpole-swingup', 'reacher-easy']"),
                                ([folders["reacher-easy"]], "cartpole-swingup", "['reacher-easy']")):
        with pytest.raises(ValueError, match=f"the run folders trained on {re.escape(trained)} and the plot is for "
                                             f"--task {task}: plot each task apart"):
            plot_runs({"a": runs}, task, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()
