"""The benchmarks' arithmetic on fake clocks and fake cases: medians, warm-ups, FLOPs, bounds, ratios, references."""

import json
import sys
import types

import pytest
import torch
from torch import nn

from tests.configs import script_module
from wm_robotics.behaviors.mppi import MPPIPlanner
from wm_robotics.benchmarks import dream, envs as env_bench, learner, planner as planner_bench, replay, timing
from wm_robotics.compiled import CompiledCall
from wm_robotics.models.rssm import RSSMWorldModel

CPU = torch.device("cpu")


class Clock:
    """A ``time`` stand-in whose ``perf_counter`` moves only when a fake work spends seconds."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def spending(self, *seconds: float):
        """A work whose calls take ``seconds`` in turn."""
        left = iter(seconds)

        def work():
            self.now += next(left)
        return work


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    for module in (timing, planner_bench, learner, dream, env_bench, replay):
        monkeypatch.setattr(module, "time", clock)
    return clock


def test_matmul_rate_is_the_reference_gflop_over_the_median_round_after_a_warm_up(clock, monkeypatch):
    monkeypatch.setattr(timing, "matmul_reference", lambda device: clock.spending(100.0, 1.0, 3.0, 2.0))
    assert timing.matmul_gflops(CPU, rounds=3) == pytest.approx(timing.MATMUL_GFLOP / 2.0)


def test_cpu_model_is_the_model_name_line_not_the_model_number_line(monkeypatch, tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel\t\t: 85\nmodel name\t: Xeon Gold\n")
    monkeypatch.setattr(timing, "Path", lambda name: tmp_path / "cpuinfo")
    assert timing.cpu_model() == "Xeon Gold"


def test_an_unknown_device_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; valid devices: \('auto', 'cpu', 'cuda'\)"):
        timing.benchmark_devices("tpu")
    assert timing.benchmark_devices("cpu") == [CPU] and timing.benchmark_devices()[0] == CPU


def test_interleaved_rows_take_each_case_median_and_the_reference_rate_of_the_same_rounds(clock, monkeypatch):
    # the reference: a 100 s warm-up, then 0.5, 0.1, 0.2 s (median 0.2 s); case a 10/30/20 ms; case b 4/4/100 ms
    monkeypatch.setattr(planner_bench, "matmul_reference", lambda device: clock.spending(100.0, 0.5, 0.1, 0.2))
    cases = [{"what": "a", "work": clock.spending(0.010, 0.030, 0.020), "gflop": 1.0, "compile_s": 9.0},
             {"what": "b", "work": clock.spending(0.004, 0.004, 0.100), "gflop": 2.0}]
    rows = planner_bench.time_interleaved(cases, CPU, repeats=3)
    assert [row["what"] for row in rows] == ["a", "b"] and all("work" not in row for row in rows)
    assert [row["ms"] for row in rows] == pytest.approx([20.0, 4.0])
    assert all(row["matmul_gflops"] == pytest.approx(timing.MATMUL_GFLOP / 0.2) for row in rows)
    assert rows[0]["compile_s"] == 9.0 and rows[1]["gflop"] == 2.0


def test_a_case_counts_its_flops_eagerly_and_its_first_call_is_the_compile_time(clock):
    call = CompiledCall(torch.sin, "sin", "eagerly")  # never called: only its switch is read
    seen = []
    a, b = torch.randn(64, 32), torch.randn(32, 16)

    def work():
        seen.append(call.active)
        clock.now += 5.0 if len(seen) == 1 else 0.0
        return a @ b

    clock.now = 7.0
    case = planner_bench.prepare("x", work, CPU, call, extra=1)
    assert seen == [True, False] and call.active  # counted eagerly, its switch restored
    assert case["gflop"] == pytest.approx(2 * 64 * 32 * 16 / 1e9) and case["extra"] == 1
    assert case["compile_s"] == pytest.approx(5.0)
    graphed = MPPIPlanner(1, cuda_graph=True)  # a CUDA graph, not compiled: its first call is not a compile time
    assert "compile_s" not in planner_bench.prepare("y", lambda: a @ b, CPU, graphed)


def test_row_labels_and_the_parameter_count_without_the_target_copies():
    assert planner_bench._label("mppi", "fp32", False) == "mppi"
    assert planner_bench._label("mppi", "bf16", True) == "mppi (bf16) (compiled)"
    assert planner_bench._label("update", "fp32", True) == "update (compiled)"
    model = nn.Module()
    model.encoder, model.target = nn.Linear(999, 1000), nn.Linear(999, 1000)  # 1M parameters each
    assert planner_bench._params_million(model) == pytest.approx(1.0)


def test_a_cpu_mppi_case_is_not_labelled_as_a_graphless_cuda_row(one_torch_thread):
    case = planner_bench.planner_case("xs", "mppi", CPU, cuda_graph=False)  # no graph: none is used on a CPU
    assert case["what"] == "mppi" and case["gflop"] > 0 and "compile_s" not in case


def fake_planner_run(monkeypatch, ms: dict[str, float], rate: float):
    """``planner.run`` on fake cases that each do 2 GFLOP; records the repeats of each ``time_interleaved``."""
    repeats = []

    def case(what, precision="fp32", compile=False, **extra):
        return {"what": planner_bench._label(what, precision, compile), "work": None, "gflop": 2.0, **extra}

    def time_interleaved(cases, device, rounds):
        repeats.append(rounds)
        return [{**{k: v for k, v in c.items() if k != "work"}, "ms": ms.get(c["what"], 10.0), "matmul_gflops": rate}
                for c in cases]

    monkeypatch.setattr(planner_bench, "benchmark_devices", lambda choice: [CPU])
    monkeypatch.setattr(planner_bench, "timed_precisions", lambda device, wanted: ["fp32", "bf16"])
    monkeypatch.setattr(planner_bench, "_model", lambda size, device: None)
    monkeypatch.setattr(planner_bench, "_params_million", lambda model: 1.5)
    monkeypatch.setattr(planner_bench, "planner_case", lambda size, planner, device, cuda_graph=True, **kw:
                        case(planner, **kw))
    monkeypatch.setattr(planner_bench, "update_case", lambda size, device, **kw: case("update", **kw))
    monkeypatch.setattr(planner_bench, "goal_cem_case", lambda device, compile=False:
                        case("goal-cem", compile=compile, params_M=0.25))
    monkeypatch.setattr(planner_bench, "time_interleaved", time_interleaved)
    monkeypatch.setattr(timing, "matmul_gflops", lambda device, rounds=5: 133.4)  # a burst: not the rows' rate
    monkeypatch.setattr(timing, "cpu_isa", lambda: "AVX2")
    return repeats


def test_planner_rows_give_the_matmul_bound_and_the_ratio_to_tdmpc2_measured_on_the_nearest_cpu(monkeypatch, capsys):
    repeats = fake_planner_run(monkeypatch, {"mppi": 40.0, "mppi (bf16)": 25.0, "update": 60.0}, rate=92.6)
    result = planner_bench.run(quick=True)
    rows = {row["what"]: row for row in result["planner"]}
    assert list(rows) == ["mppi", "mppi (bf16)", "update", "update (bf16)", "cem", "goal-cem"]  # quick: no compiled
    assert repeats == [3, 1] and {row["size"] for row in rows.values()} == {"xs"}
    session21 = planner_bench.TDMPC2_REFERENCES[2]  # the AVX2 CPU whose rate is 92.6 GFLOP/s
    assert result["tdmpc2_reference"] is session21
    mppi = rows["mppi"]
    assert mppi["matmul_bound_ms"] == pytest.approx(2.0 / 92.6 * 1000)
    assert mppi["bound_fraction"] == pytest.approx(mppi["matmul_bound_ms"] / 40.0)
    assert mppi["tdmpc2_ms"] == 347.6 and mppi["speedup_vs_tdmpc2"] == pytest.approx(347.6 / 40.0)
    assert rows["mppi (bf16)"]["tdmpc2_ms"] == 347.6  # a variant compares with TD-MPC2's own row
    assert rows["update"]["speedup_vs_tdmpc2"] == pytest.approx(300.0 / 60.0)
    assert rows["goal-cem"]["tdmpc2_ms"] is None and rows["goal-cem"]["speedup_vs_tdmpc2"] is None
    assert rows["goal-cem"]["params_M"] == 0.25 and rows["cem"]["params_M"] == 1.5
    assert "| xs | 1.5 | cpu | mppi | 2 | 40 | 92.6 | 21.6 | 54 | 348 | 8.69 |" in capsys.readouterr().out


def test_a_full_planner_run_adds_the_compiled_rows_and_the_s_size(monkeypatch):
    repeats = fake_planner_run(monkeypatch, {}, rate=92.6)
    whats = [(row["size"], row["what"]) for row in planner_bench.run()["planner"]]
    assert ("xs", "mppi (compiled)") in whats and ("xs", "update (compiled)") in whats
    assert ("xs", "goal-cem (compiled)") in whats and ("s", "mppi") in whats and ("s", "goal-cem") not in whats
    assert repeats == [7, 3, 7, 3]


def test_learner_times_are_the_medians_of_the_rounds_after_the_warm_up(clock, monkeypatch, one_torch_thread):
    stamps = iter([0, 100, 200,  # the warm-up: 100 s each part
                   1000, 1001, 1004, 2000, 2003, 2004, 3000, 3002, 3005])  # world model 1, 3, 2 s; actor-critic 3, 1, 3
    monkeypatch.setattr(clock, "perf_counter", lambda: next(stamps))
    row = learner.measure("xs", "proprio", CPU, repeats=3, units=32, imag_starts=64, batch=2, length=8)
    assert (row["world_model_ms"], row["actor_critic_ms"], row["total_ms"]) == (2000, 3000, 5000)
    assert row["imagined_steps_per_s"] == pytest.approx(16 * 15 / 3.0)  # 16 starts × horizon 15 in 3 s
    model = RSSMWorldModel.from_size("xs", {"proprio": (5,)}, 1)
    assert row["params_M"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)


def test_learner_rows_compare_with_dreamerv3_from_the_same_observations(monkeypatch, capsys):
    monkeypatch.setattr(learner, "benchmark_devices", lambda choice: [CPU])
    rates = iter([400.0] + [180.0] * 20)  # a neighbour's burst at the first row only
    monkeypatch.setattr(learner, "matmul_gflops", lambda device: next(rates))
    monkeypatch.setattr(learner, "timed_precisions", lambda device, wanted: ["fp32"])
    monkeypatch.setattr(learner, "measure", lambda size, key, device, repeats, units, starts=None, **kw: {
        "size": size, "obs": key, "device": "cpu", "params_M": 1.0, "units": units, "imag_starts": starts or 1024,
        "actor_grad": kw["actor_grad"], "precision": "fp32", "compile": kw.get("compile", False),
        "world_model_ms": 100.0, "actor_critic_ms": 100.0, "total_ms": 200.0, "imagined_steps_per_s": 1.0})
    rows = learner.run()["learner"]
    pixels = next(row for row in rows if row["obs"] == "pixels")
    assert pixels["reference_total_ms"] == 9400.0 and pixels["speedup_vs_reference"] == pytest.approx(47.0)
    assert rows[0]["obs"] == "proprio" and rows[0]["speedup_vs_reference"] == pytest.approx(39.0)
    assert [row["matmul_gflops"] for row in rows[:2]] == [400.0, 180.0]  # each row with the rate timed beside it
    out = capsys.readouterr().out  # chosen by the rows' median rate, 180: no warning that the CPUs differ
    assert f"this run {timing.cpu_isa()}, 180)" in out and "matmul rate is" not in out


def test_dream_rows_are_medians_after_a_warm_up_round(clock, monkeypatch):
    spent = iter([100, 100, 1, 10, 3, 30, 2, 50])  # warm-up, then (batched, one at a time) per round
    monkeypatch.setattr(dream, "dream_returns", lambda *args: setattr(clock, "now", clock.now + next(spent)))
    batched, one = dream.measure(CPU, population=1, rollouts=1, horizon=2, rounds=3)  # one call per mode
    assert (batched["seconds_per_generation"], one["seconds_per_generation"]) == (2, 30)
    assert batched["speedup_vs_one_at_a_time"] == 15 and one["speedup_vs_one_at_a_time"] == 1


def test_env_rates_are_relative_to_raw_dm_control(monkeypatch):
    monkeypatch.setattr(env_bench, "_raw", lambda domain, task, pixels, fast=False: "raw fast" if fast else "raw")
    monkeypatch.setattr(env_bench, "_ours", lambda name, mode, repeat, fast=False: f"ours {repeat}")
    monkeypatch.setattr(env_bench, "_shimmy", lambda domain, task, pixels: None)
    rates = {"raw": 200.0, "ours 1": 100.0, "ours 2": 400.0, "raw fast": 300.0}
    monkeypatch.setattr(env_bench, "interleaved_rates", lambda cases, rounds, seconds:
                        {impl: rates[work] for impl, work in cases.items()})
    rows = env_bench.single_env(tasks=[("cartpole", "swingup")], rounds=1, seconds=0.1)
    assert {(row["obs"], row["impl"]): row["vs_raw"] for row in rows} == {
        ("proprio", "raw dm_control"): 1.0, ("proprio", "ours, repeat 1"): 0.5, ("proprio", "ours, repeat 2"): 2.0,
        ("pixels", "raw dm_control"): 1.0, ("pixels", "ours, repeat 1"): 0.5, ("pixels", "ours, repeat 2"): 2.0,
        ("pixels", "raw, fast render"): 1.5, ("pixels", "ours, repeat 1, render_fast"): 0.5}


def test_vector_rates_count_every_process_and_compare_with_one_process(clock, monkeypatch):
    class Env:
        def __init__(self, step_s):
            self.step_s, self.action_space = step_s, types.SimpleNamespace(sample=lambda: 0.0)
            self.single_action_space = self.action_space

        def reset(self, seed=None):
            return None, {}

        def step(self, action):
            clock.now += self.step_s
            return None, 0.0, False, False, {}

        def close(self):
            pass

    monkeypatch.setattr(env_bench.envs, "make_env", lambda name, obs_mode: Env(0.01))  # 100 steps/s
    monkeypatch.setattr(env_bench.envs, "make_vector_env", lambda name, count, asynchronous, obs_mode: Env(0.02))
    rows = env_bench.vector_scaling(counts=(1, 2, 4), agent_steps=10)
    assert [row["agent_steps_per_s"] for row in rows] == pytest.approx([100, 50, 100, 200])
    assert [row["speedup_vs_1"] for row in rows] == pytest.approx([2, 1, 2, 4])


def test_replay_row_gives_bytes_per_stored_step_and_the_median_sampling_time(clock, monkeypatch):
    monkeypatch.setattr(replay, "SequenceReplay", lambda *args, **kwargs: types.SimpleNamespace(
        add_episode=lambda episode, save: None, num_steps=1000, nbytes=12_345_000,
        sample=clock.spending(*[0.001] * 49, 1.0)))  # one slow sample in 50
    peaks = iter([100.0, 900.0, 950.0])  # before filling, filled, after sampling
    monkeypatch.setattr(replay, "_peak_rss_mb", lambda: next(peaks))
    row = replay.run(quick=True)["replay"]
    assert row["bytes_per_step"] == 12_345 and row["sample_ms_median"] == pytest.approx(1.0)
    assert (row["peak_rss_MB"], row["rss_growth_MB"], row["peak_rss_after_sampling_MB"]) == (900.0, 800.0, 950.0)


def test_benchmark_script_runs_each_suite_with_the_device_it_takes_and_writes_one_json(monkeypatch, tmp_path):
    script, calls = script_module("benchmark"), []

    def suite(name, takes_device):
        def run(quick=False, device_choice="auto"):
            calls.append((name, quick, device_choice))
            return {name: [1]}

        def run_without_device(quick=False):
            calls.append((name, quick))
            return {name: [2]}
        return types.SimpleNamespace(run=run if takes_device else run_without_device)

    modules = {path: suite(name, name == "planner") for name, path in script.SUITES.items()}
    monkeypatch.setattr(script, "importlib", types.SimpleNamespace(import_module=modules.__getitem__))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "all", "--quick", "--device", "cpu"])
    script.main()
    assert calls == [("replay", True), ("envs", True), ("learner", True), ("dream", True), ("planner", True, "cpu")]
    saved = json.loads((tmp_path / "benchmark_results" / "all.json").read_text())
    assert saved["args"] == {"what": "all", "out": None, "quick": True, "device": "cpu"}
    assert saved["planner"] == [1] and saved["replay"] == [2] and saved["machine"]["isa"] == timing.cpu_isa()
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "dream"])
    script.main()
    assert json.loads((tmp_path / "benchmark_results" / "dream.json").read_text())["dream"] == [2]
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "envs", "--device", "cpu"])  # was run and saved as "cpu"
    with pytest.raises(SystemExit):
        script.main()
    assert len(calls) == 6 and not (tmp_path / "benchmark_results" / "envs.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_benchmark_script_refuses_cuda_where_torch_sees_none(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "planner", "--device", "cuda"])
    with pytest.raises(SystemExit) as exit_:
        script_module("benchmark").main()
    assert exit_.value.code == 2 and "torch sees no CUDA device" in capsys.readouterr().err


def test_update_speed_times_a_copy_of_the_run_with_flushing_off_then_on(clock, monkeypatch, tmp_path, capsys):
    script, flushes, made = script_module("update_speed"), [], []
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.pt").write_bytes(b"x")
    (run / "config.yaml").write_text("device: auto\ntorch_threads: 2\n")

    class Trainer:
        def __init__(self, cfg, folder):
            assert (folder / "checkpoints" / "latest.pt").is_file()
            self.cfg, self.folder, self.updates = cfg, folder, 0
            made.append(self)

        def restore(self):
            pass

        def update(self):
            self.updates += 1
            clock.now += 0.002 if flushes and flushes[-1] else 0.010

    monkeypatch.setattr(script, "Trainer", Trainer)
    monkeypatch.setattr(script, "time", clock)
    flush = types.SimpleNamespace(set_flush_denormal=lambda on: flushes.append(on) or True)
    monkeypatch.setattr(script, "torch", flush)
    monkeypatch.setattr(sys, "argv", ["update_speed.py", str(run), "--rounds", "2", "--updates", "4"])
    script.main()
    [trainer] = made
    assert trainer.folder != run and trainer.cfg == {"device": "cpu", "torch_threads": 1}
    assert trainer.updates == 5 + 2 * 2 * 4 and flushes == [True, False, True, False, True]  # the first: supported?
    assert capsys.readouterr().out.splitlines() == [
        "round 1: flush subnormals off     10.0 ms per update", "round 1: flush subnormals on       2.0 ms per update",
        "round 2: flush subnormals off     10.0 ms per update", "round 2: flush subnormals on       2.0 ms per update"]
    monkeypatch.setattr(script, "torch", types.SimpleNamespace(set_flush_denormal=lambda on: False))
    with pytest.raises(SystemExit):  # "on" rows would time the same code as "off"
        script.main()
    assert "this CPU cannot flush subnormals" in capsys.readouterr().err and len(made) == 1
    (run / "config.yaml").unlink()
    with pytest.raises(SystemExit):
        script.main()
    assert "has no config.yaml: not a run folder with a checkpoint" in capsys.readouterr().err and len(made) == 1
