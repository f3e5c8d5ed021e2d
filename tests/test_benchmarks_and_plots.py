"""Benchmark helpers and plots produce real numbers and files (no timing is asserted)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.configs import ROOT
from wm_robotics import plots
from wm_robotics.behaviors.mppi import MPPIPlanner
from wm_robotics.benchmarks import envs as env_bench, learner, planner as planner_bench, timing
from wm_robotics.benchmarks.timing import interleaved_rates, matmul_gflops, nearest_reference, write_json
from wm_robotics.compiled import CompiledCall
from wm_robotics.plots import BUDGETS, eval_curve, eval_table, plot_runs, published_results, run_clock


def test_interleaved_rates_counts_items(monkeypatch):
    ticks = iter(range(10_000))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: 0.1 * next(ticks))  # each reading 0.1 s after the last
    rates = interleaved_rates({"a": lambda: 10, "b": lambda: 5}, rounds=2, seconds=0.25)
    assert rates == pytest.approx({"a": 100.0, "b": 50.0})  # 3 calls (0.3 s) per round: items / 0.1 s


def test_interleaved_rates_are_the_median_of_the_rounds(monkeypatch):
    ticks = iter(range(10_000))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: 0.1 * next(ticks))
    items = iter([0] + [10] * 3 + [40] * 3 + [20] * 3)  # a warm-up call, then rounds at 100, 400 and 200 items/s
    assert interleaved_rates({"a": lambda: next(items)}, rounds=3, seconds=0.25) == pytest.approx({"a": 200.0})


def test_matmul_reference_does_the_work_its_rate_is_computed_from():
    work = timing.matmul_reference(torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        work()
    assert counter.get_total_flops() == pytest.approx(timing.MATMUL_GFLOP * 1e9)


def test_tables_print_large_and_negative_numbers_without_exponents(capsys):
    timing.print_table("t", ["a", "b", "c", "d"], [[-1234.4, 12345.6, 0.012345, "x"]])
    assert capsys.readouterr().out.splitlines()[-3:] == ["| a | b | c | d |", "|---|---|---|---|",
                                                         "| -1,234 | 12,346 | 0.0123 | x |"]


@pytest.mark.parametrize("cpuinfo, model", [("processor\t: 0\nmodel name\t: Xeon: rev 2\n", "Xeon: rev 2"),
                                            ("processor\t: 0\nCPU part\t: 0xd0c\n", "unknown"),  # an ARM core
                                            (None, "unknown")])  # no /proc/cpuinfo
def test_cpu_model_reads_the_model_name_line(monkeypatch, tmp_path, cpuinfo, model):
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    monkeypatch.setattr(timing, "Path", lambda name: path if name == "/proc/cpuinfo" else pytest.fail(name))
    assert timing.cpu_model() == model


def test_peer_reference_is_the_one_made_on_the_nearest_machine_and_a_far_one_is_flagged(capsys):
    slow = {"machine": "slow", "matmul_gflops": 180.0, "isa": "AVX2"}
    fast = {"machine": "fast", "matmul_gflops": 400.0, "isa": "AVX2"}
    assert nearest_reference([slow, fast], 285.0, "peer", "AVX2") is fast  # by ratio (1.40 vs 1.58), not difference
    assert "WARNING" in capsys.readouterr().out  # 400 is 40% above 285
    assert nearest_reference([slow, fast], 370.0, "peer", "AVX2") is fast
    assert "WARNING" not in capsys.readouterr().out
    assert nearest_reference([slow], 285.0, "peer", "AVX2") is slow
    assert "WARNING" in capsys.readouterr().out  # 180 is 37% below 285: a slower machine is flagged too
    wide = {"machine": "wide", "matmul_gflops": 370.0, "isa": "AVX512"}
    assert nearest_reference([slow, fast, wide], 370.0, "peer", "AVX2") is fast  # this CPU's ISA first, then the rate
    assert "WARNING" not in capsys.readouterr().out
    assert nearest_reference([slow, wide], 370.0, "peer", "AVX512_VNNI") is wide  # none alike: nearest of all, flagged
    assert "WARNING" in (out := capsys.readouterr().out) and "with AVX512 kernels" in out
    assert nearest_reference(planner_bench.TDMPC2_REFERENCES, 180.0, "TD-MPC2", "AVX512")["ms"]["xs"]["mppi"] == 154.0
    assert nearest_reference(planner_bench.TDMPC2_REFERENCES, 300.0, "TD-MPC2", "AVX512")["ms"]["xs"]["mppi"] == 157.9
    assert nearest_reference(planner_bench.TDMPC2_REFERENCES, 400.0, "TD-MPC2", "AVX512")["ms"]["xs"]["mppi"] == 121.0
    assert matmul_gflops(torch.device("cpu"), rounds=1) > 0


def test_the_tdmpc2_reference_is_chosen_by_the_cpu_rows_own_matmul_rates():
    rows = [{"device": "cpu", "matmul_gflops": rate} for rate in (90.0, 140.0, 95.0)]
    rows.append({"device": "cuda:0", "matmul_gflops": 50_000.0})  # a GPU's rate says nothing of the CPU
    assert planner_bench.cpu_rate(rows) == 95.0
    assert nearest_reference(planner_bench.TDMPC2_REFERENCES, 95.0, "TD-MPC2", "AVX2")["ms"]["xs"]["mppi"] == 347.6
    assert nearest_reference(planner_bench.TDMPC2_REFERENCES, 155.0, "TD-MPC2", "AVX2")["ms"]["xs"]["mppi"] == 250.8
    assert planner_bench.cpu_rate([{"device": "cuda:0", "matmul_gflops": 50_000.0}]) > 0  # none: timed here


def test_bf16_rows_are_timed_only_where_the_device_has_bf16_kernels(monkeypatch, capsys):
    wanted = ["fp32", "bf16", "bf16_full"]
    monkeypatch.setattr(timing, "native_bf16", lambda device: True)
    assert timing.timed_precisions(torch.device("cpu"), wanted) == wanted and capsys.readouterr().out == ""
    monkeypatch.setattr(timing, "native_bf16", lambda device: False)
    assert timing.timed_precisions(torch.device("cpu"), wanted) == ["fp32"]
    assert "bf16 / bf16_full rows are skipped" in capsys.readouterr().out


def test_env_work_functions_step_the_real_env():
    assert env_bench._ours("cartpole-swingup-v0", "proprio", 2)() == env_bench.BLOCK * 2
    assert env_bench._raw("cartpole", "swingup", pixels=False)() == env_bench.BLOCK
    with pytest.raises(ValueError, match=r"counts must include 1, the speedup's reference, got \[2, 4\]"):
        env_bench.vector_scaling(counts=(2, 4))


def test_learner_measure_reports_both_parts(tmp_path, one_torch_thread):
    row = learner.measure("xs", "proprio", torch.device("cpu"), repeats=1, units=32, imag_starts=64, batch=2, length=8)
    assert row["world_model_ms"] > 0 and row["actor_critic_ms"] > 0 and row["imag_starts"] == 16
    path = write_json(tmp_path / "b.json", {"learner": [row]})
    saved = json.loads(path.read_text())
    assert saved["learner"][0]["size"] == "xs" and saved["machine"]["cpu_model"] == timing.cpu_model()


def test_goal_cem_row_times_the_jepa_goal_preset_through_the_controller(one_torch_thread):
    preset = planner_bench.goal_preset()
    assert preset["experiment_name"] == "jepa_goal" and preset["behavior"]["planner"] == "cem"
    [row] = planner_bench.time_interleaved([planner_bench.goal_cem_case(torch.device("cpu"))], torch.device("cpu"), 1)
    assert row["what"] == "goal-cem" and row["ms"] > 0 and row["gflop"] > 0 and row["params_M"] > 0
    assert row["matmul_gflops"] > 0 and "work" not in row


def test_plot_runs_from_metrics_csv(tmp_path):
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        lines = ["step,episode_return,eval_return"] + [f"{s},,{s / 100 + seed}" for s in (10000, 20000, 30000)]
        (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    steps, returns = eval_curve(tmp_path / "run1")
    np.testing.assert_array_equal(steps, [10000, 20000, 30000])
    np.testing.assert_array_equal(returns, [101, 201, 301])
    np.testing.assert_array_equal(eval_curve(tmp_path / "run1" / "metrics.csv")[1], returns)  # or the CSV itself
    out = plot_runs({"dreamer": [tmp_path / "run0", tmp_path / "run1"]}, "cartpole-swingup", tmp_path / "p.png")
    assert out.stat().st_size > 10_000
    (tmp_path / "short.csv").write_text("step,eval_return\n10000,50\n")  # a run still going: 10k only
    table = eval_table({"dreamer": [tmp_path / "run0", tmp_path / "run1"], "new": [tmp_path / "short.csv"]})
    assert ("| dreamer, run1 | 101.0 | 201.0 | 301.0 |" in table
            and "| **dreamer, mean** | 100.5 | 200.5 | 300.5 |" in table)
    assert "| new, short | 50.0 | – | – |" in table
    (tmp_path / "sparse.csv").write_text("step,eval_return\n20000,400\n")  # another eval grid: aligned by step
    table = eval_table({"mixed": [tmp_path / "run0", tmp_path / "sparse.csv"]})
    assert table.splitlines()[0] == "| run | 20k |"  # the one step both have
    assert "| mixed, run0 | 200.0 |" in table and "| **mixed, mean** | 300.0 |" in table
    assert published_results()["100k"]["cartpole-swingup"]["DreamerV3"] == 677
    assert set(published_results()) - {"_sources"} == set(BUDGETS)
    with pytest.raises(ValueError, match=r"unknown budget '2M'; valid budgets: \['100k', '500k', '1M'\]"):
        plot_runs({"dreamer": [tmp_path / "run0"]}, "cartpole-swingup", tmp_path / "q.png", budget="2M")
    (tmp_path / "run1" / "config.yaml").write_text("offline:\n  data: data/reacher_goal\n  updates: 5000\n")
    assert (run_clock(tmp_path / "run0"), run_clock(tmp_path / "run1")) == ("env steps", "updates")
    with pytest.raises(ValueError, match=r"mix online runs \(env steps\) and offline runs \(updates\)"):
        plot_runs({"online": [tmp_path / "run0"], "offline": [tmp_path / "run1"]}, "cartpole-swingup",
                  tmp_path / "r.png")


def test_plot_draws_the_seed_mean_its_min_max_band_and_references_for_online_runs_only(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figure to look at
    for seed in (0, 1):
        (tmp_path / f"run{seed}").mkdir()
        (tmp_path / f"run{seed}" / "metrics.csv").write_text(
            "step,eval_return\n" + "".join(f"{s},{s / 100 + 100 * seed}\n" for s in (10000, 20000, 30000)))
    runs = {"dreamer": [tmp_path / "run0", tmp_path / "run1"]}
    for offline in (False, True):
        if offline:
            for seed in (0, 1):
                (tmp_path / f"run{seed}" / "config.yaml").write_text("offline:\n  data: data/x\n  updates: 5000\n")
        plot_runs(runs, "cartpole-swingup", tmp_path / "p.png")
        axis = figures[-1].axes[0]
        mean, *dashed = axis.lines
        np.testing.assert_array_equal(mean.get_ydata(), [150, 250, 350])
        band = axis.collections[0].get_paths()[0].vertices[:, 1]
        assert (band.min(), band.max()) == (100, 400)
        assert axis.get_xlabel() == ("updates" if offline else "env steps")
        references = [] if offline else sorted(published_results()["100k"]["cartpole-swingup"].values())
        assert sorted(line.get_ydata()[0] for line in dashed) == references
        assert all(line.get_linestyle() == "--" for line in dashed)


def test_plot_runs_script_refuses_a_label_given_twice(tmp_path):
    (tmp_path / "a.csv").write_text("step,eval_return\n10000,1\n")
    seeds = f"base={tmp_path / 'a.csv'}"
    command = [sys.executable, str(ROOT / "scripts/plot_runs.py"), seeds, seeds, "--task", "cartpole-swingup",
               "--out", str(tmp_path / "p.png")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "label 'base' given twice" in result.stderr


def test_eager_runs_compiled_code_kernel_by_kernel_inside_and_restores_it():
    call, planner = CompiledCall(torch.sin, "sin", "eagerly"), MPPIPlanner(1, compile=True)
    for compiled, switches in ((call, ["active"]), (planner, ["cuda_graph", "compile"])):
        with planner_bench.eager(compiled):
            assert not any(getattr(compiled, name) for name in switches)
        assert all(getattr(compiled, name) for name in switches)
    with planner_bench.eager(None):  # nothing compiled: nothing to switch
        pass


def test_a_row_whose_cuda_graph_or_compile_fell_back_to_eager_is_refused():
    planner = MPPIPlanner(1, cuda_graph=True)

    def search_that_lost_its_graph():  # as SamplingPlanner does when a capture fails: on, eagerly
        planner.cuda_graph = False

    with pytest.raises(RuntimeError, match="mppi: cuda_graph failed .*its row would time eager code"):
        planner_bench.prepare("mppi", search_that_lost_its_graph, torch.device("cpu"), planner)


def test_eval_curve_reads_the_eval_rows_among_the_training_rows(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,episode_return,eval_return,loss/total\n"
                                          "100,5.0,,1.0\n200,,7.5,\n300,6.0,,0.5\n400,,9.0,0.25\n")
    steps, returns = eval_curve(tmp_path)
    assert steps.tolist() == [200.0, 400.0] and returns.tolist() == [7.5, 9.0]
    (tmp_path / "early.csv").write_text("step,episode_return,eval_return\n100,5.0,\n")
    with pytest.raises(ValueError, match="early.csv has no eval_return rows yet"):
        eval_curve(tmp_path / "early.csv")


def test_table_and_plot_show_the_mean_of_three_seeds_not_their_median(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    runs = []
    for seed, value in enumerate((0, 10, 50)):
        runs.append(tmp_path / f"seed{seed}.csv")
        runs[-1].write_text(f"step,eval_return\n10000,{value}\n20000,{2 * value}\n")
    assert "| **base, mean** | 20.0 | 40.0 |" in eval_table({"base": runs})
    plot_runs({"base": runs}, "cartpole-swingup", tmp_path / "p.png")
    np.testing.assert_array_equal(figures[-1].axes[0].lines[0].get_ydata(), [20, 40])


def test_seeds_that_share_no_evaluation_step_are_refused(tmp_path):
    (tmp_path / "a.csv").write_text("step,eval_return\n10000,1\n")
    (tmp_path / "b.csv").write_text("step,eval_return\n15000,2\n")
    runs = {"base": [tmp_path / "a.csv", tmp_path / "b.csv"]}
    with pytest.raises(ValueError, match="share no evaluation step: their curves cannot be averaged"):
        eval_table(runs)
    with pytest.raises(ValueError, match="share no evaluation step"):
        plot_runs(runs, "cartpole-swingup", tmp_path / "p.png")
