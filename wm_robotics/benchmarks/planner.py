"""Planner and TD-MPC2 update speed: ms per MPPI / CEM action and ms per ``tdmpc`` update, ~1M and ~5M JEPA.

Default planner settings (MPPI: TD-MPC2's horizon 3, 6 iterations, 512 + 24 prior samples; CEM:
PlaNet's horizon 12, 10 iterations, 1000 candidates) on a cartpole-sized model (5-d proprio, 1
action), one environment, objective = rewards + terminal Q(z, π(z)) (2 of the Q heads). The update
is the ``tdmpc`` preset's (batch 256, horizon 3): world-model step, target EMA and policy-prior step.

FLOPs per call are counted with torch's ``FlopCounterMode``. The reference measured in the same run is the machine's
fp32 matmul rate now (a 1024³ matmul): ``matmul_bound_ms`` = FLOPs / that rate is what a purely matmul-bound
implementation would take. The MPPI variants and the updates of one size are timed in the same rounds (each round: the
reference, then each case once; medians), as are CEM and goal-CEM, so their ratios to each other and to the reference
survive a machine whose speed drifts. The ``goal-cem`` row is the ``jepa_goal`` preset's act as deployed
(``MPCController`` built from ``configs/experiment/jepa_goal.yaml``): encode a reacher frame + proprio, then CEM on the
preset's goal energy (for a ``split_dynamics`` model, in the proprio block alone). On CUDA the planners replay their
search as a CUDA graph; the ``mppi (no graph)`` row times the same search launched kernel by kernel. The ``mppi (bf16)``
row runs the same search with ``precision="bf16"`` (matmuls in bfloat16); its matmul-bound time still uses the fp32
rate, so its "% of bound" can pass 100; a CPU without bf16 kernels skips the bf16 rows (``timing.timed_precisions``).
The ``(compiled)`` rows (not with ``--quick``) run MPPI and goal-CEM in fp32 through ``torch.compile``
(``compile=True``; CPU only: on CUDA the CUDA graph replaces it), and the update with its world-model loss compiled
(forward and backward, as a run with ``compile=true``; CPU and CUDA); ``compile_s`` in the JSON is their first call,
which compiles. TD-MPC2's own code (torch 2.13, compile off, 2 threads) was timed on this project's 2-core CPUs, not
re-run here (``TDMPC2_REFERENCES``): a run compares with the measurement made on a CPU of this one's vector ISA (AVX2,
AVX-512) whose matmul rate is nearest this machine's (:func:`timing.cpu_rate`: the median of the CPU rows' own rates, so
a neighbour's burst at the start cannot pick the wrong CPU), with a warning when even that one is more than 25% away or
none has this ISA; CUDA rows compare with the CPU time, as a cross-device figure.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import wm_robotics.envs as envs
from wm_robotics.behaviors.mpc_behavior import MPCBehavior
from wm_robotics.behaviors.planning import SamplingPlanner
from wm_robotics.benchmarks.timing import (
    MATMUL_GFLOP,
    SESSIONS_1_19_CPU,
    benchmark_devices,
    cpu_rate,
    matmul_reference,
    nearest_reference,
    print_table,
    sync,
    timed_precisions,
)
from wm_robotics.builders import untrained_payload
from wm_robotics.compiled import CompiledCall
from wm_robotics.control import MPCController
from wm_robotics.models.jepa import JEPAWorldModel
from wm_robotics.models.nets import adam
from wm_robotics.precision import compute_precision

#: TD-MPC2's own code (torch 2.13, compile off, 2 threads): ms per MPPI action and per update (batch 256) of its
#: 1M ("xs") and 5M ("s") models, on the project's 2-core CPUs, each with that CPU's fp32 1024³ matmul rate and
#: vector ISA (``timing.cpu_isa``); on the system malloc, except session 60's: on jemalloc, as this benchmark's rows
#: run (there it took 4–5% off TD-MPC2's time per action, 10–11% per update)
TDMPC2_REFERENCES = (
    {**SESSIONS_1_19_CPU, "ms": {"xs": {"mppi": 154.0, "update": 120.5}, "s": {"mppi": 438.0, "update": 443.5}}},
    {"machine": "2-core AVX-512 Xeon of session 20 (docs/results/tdmpc2_reference_session20.json)",
     "matmul_gflops": 414.0, "isa": "AVX512",
     "ms": {"xs": {"mppi": 121.0, "update": 92.5}, "s": {"mppi": 301.0, "update": 298.8}}},
    {"machine": "2-core AVX2 AMD EPYC of session 21 (docs/results/tdmpc2_reference_session21.json)",
     "matmul_gflops": 92.6, "isa": "AVX2",
     "ms": {"xs": {"mppi": 347.6, "update": 300.0}, "s": {"mppi": 847.5, "update": 915.6}}},
    {"machine": "2-core AVX2 AMD EPYC of session 32 (docs/results/tdmpc2_reference_session32.json)",
     "matmul_gflops": 133.4, "isa": "AVX2",
     "ms": {"xs": {"mppi": 250.8, "update": 202.7}, "s": {"mppi": 654.9, "update": 673.0}}},
    {"machine": "2-core AMX Xeon of session 60, TD-MPC2 on jemalloc (docs/results/tdmpc2_reference_session60.json)",
     "matmul_gflops": 314.4, "isa": "AVX512",
     "ms": {"xs": {"mppi": 157.9, "update": 116.1}, "s": {"mppi": 408.7, "update": 378.2}}},
)
BATCH, HORIZON = 256, 3
#: Hydra's config tree of this (editable) checkout: the goal-cem row times the jepa_goal preset as configured
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


#: a benchmark case: "what", "work" (the call to time), "gflop", and extra fields for its row (e.g. "compile_s")
Case = dict


def prepare(what: str, work: Callable[[], object], device: torch.device,
            compiled: SamplingPlanner | CompiledCall | None = None, **extra) -> Case:
    """A case ready to time: its first call made (it compiles ``compiled``, a ``compile`` planner's search or a
    ``CompiledCall``: then its seconds are the case's ``compile_s``) and its FLOPs counted on one more call with
    ``compiled`` eager (the counter cannot see the kernels of a CUDA graph replay or of compiled code)."""
    switches = _switches(compiled)
    compiles = bool(switches) and getattr(compiled, switches[-1])
    on = [name for name in switches if getattr(compiled, name)]
    start = time.perf_counter()
    work()
    sync(device)
    failed = [name for name in on if not getattr(compiled, name)]  # a failed capture / compile falls back to eager
    if failed:
        raise RuntimeError(f"{what}: {' and '.join(failed)} failed (see the warning above); its row would time "
                           f"eager code")
    if compiles:
        extra["compile_s"] = time.perf_counter() - start
    with eager(compiled), FlopCounterMode(display=False) as counter:
        work()
    return {"what": what, "work": work, "gflop": counter.get_total_flops() / 1e9, **extra}


def _switches(compiled: SamplingPlanner | CompiledCall | None) -> tuple[str, ...]:
    """The attributes that make ``compiled`` run a CUDA graph or compiled code, torch.compile's last."""
    if compiled is None:
        return ()
    return ("active",) if isinstance(compiled, CompiledCall) else ("cuda_graph", "compile")


@contextlib.contextmanager
def eager(compiled: SamplingPlanner | CompiledCall | None) -> Iterator[None]:
    """Inside, ``compiled`` runs kernel by kernel: no CUDA graph, not compiled (its settings restored after)."""
    switches = _switches(compiled)
    saved = [getattr(compiled, name) for name in switches]
    for name in switches:
        setattr(compiled, name, False)
    try:
        yield
    finally:
        for name, value in zip(switches, saved):
            setattr(compiled, name, value)


def time_interleaved(cases: list[Case], device: torch.device, repeats: int) -> list[dict]:
    """Rows of ``cases`` timed in ``repeats`` rounds that run a 1024³ matmul (the reference) and then every case
    once: ``ms`` is a case's median, ``matmul_gflops`` the reference's median rate over the same rounds, so the
    cases' ratios to each other and to the reference survive a machine whose speed drifts."""
    works = [matmul_reference(device)] + [case["work"] for case in cases]
    works[0]()  # the reference's warm-up (the cases had theirs in ``prepare``)
    times: list[list[float]] = [[] for _ in works]
    for _ in range(repeats):
        for work, spent in zip(works, times):
            sync(device)
            start = time.perf_counter()
            work()
            sync(device)
            spent.append(1000 * (time.perf_counter() - start))
    reference_ms, *case_ms = [float(np.median(spent)) for spent in times]
    rate = MATMUL_GFLOP / (reference_ms / 1000)
    return [{**{k: v for k, v in case.items() if k != "work"}, "ms": ms, "matmul_gflops": rate}
            for case, ms in zip(cases, case_ms)]


def _params_million(model: JEPAWorldModel) -> float:
    """Trained parameters in millions (the EMA target copies excluded)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("target")) / 1e6


def _model(size: str, device: torch.device) -> JEPAWorldModel:
    torch.manual_seed(0)
    return JEPAWorldModel.from_size(size, {"proprio": (5,)}, 1, target="stopgrad", horizon=HORIZON).to(device)


def _label(what: str, precision: str, compile: bool) -> str:
    """A row's name: e.g. "mppi", "mppi (bf16)", "update (compiled)"."""
    return " ".join([what] + ([f"({precision})"] if precision != "fp32" else []) + (["(compiled)"] if compile else []))


def planner_case(size: str, planner: str, device: torch.device, cuda_graph: bool = True, precision: str = "fp32",
                 compile: bool = False) -> Case:
    """One planned action (one environment) at the planner's default settings."""
    model = _model(size, device).eval()
    settings = {"cuda_graph": cuda_graph, "precision": precision, "compile": compile}
    behavior = MPCBehavior(model, planner=planner, settings=settings).to(device)
    with torch.no_grad():
        state = {"latent": model.encoder({"proprio": torch.randn(1, 5, device=device)})}
    first = torch.zeros(1, dtype=torch.bool, device=device)
    name = _label(planner if cuda_graph or device.type != "cuda" else f"{planner} (no graph)", precision, compile)
    return prepare(name, lambda: behavior.plan(model, state, first, sample=False), device, behavior.planner)


def goal_preset() -> dict:
    """The ``jepa_goal`` preset's resolved config, composed by Hydra from the repository's ``configs/``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=["experiment=jepa_goal"]), resolve=True)


def goal_cem_case(device: torch.device, compile: bool = False) -> Case:
    """One ``jepa_goal`` action as deployed: ``MPCController`` (freshly initialised preset model and
    settings) encodes a reacher frame + proprio and runs CEM on the preset's goal energy."""
    cfg = goal_preset()
    env = envs.make_env(cfg["env"]["id"], **envs.env_kwargs(cfg))
    torch.manual_seed(0)
    controller = MPCController(untrained_payload(cfg, env), str(device), "cem", compile=compile)
    obs, _ = env.reset(seed=0)
    goal, _ = env.reset(seed=1)
    env.close()
    controller.set_goal(goal)
    return prepare(_label("goal-cem", "fp32", compile), lambda: controller.act(obs), device,
                   controller.planner, params_M=_params_million(controller.model))


def update_case(size: str, device: torch.device, precision: str = "fp32", compile: bool = False) -> Case:
    """One ``tdmpc`` update: model loss + backward + Adam + target EMA + policy-prior step, the
    forward and backward passes in ``precision``, the loss compiled with ``compile`` (as ``Trainer.update``
    runs them)."""
    model = _model(size, device)
    behavior = MPCBehavior(model).to(device)
    optimizer = adam(model.parameters(), 3e-4)
    steps = HORIZON + 1
    batch = {"obs/proprio": torch.randn(BATCH, steps, 5, device=device),
             "action": torch.rand(BATCH, steps, 1, device=device) * 2 - 1,
             "reward": torch.rand(BATCH, steps, device=device),
             "is_first": torch.zeros(BATCH, steps, dtype=torch.bool, device=device),
             "is_terminal": torch.zeros(BATCH, steps, dtype=torch.bool, device=device)}

    compute = compute_precision(device, precision)
    loss_fn = CompiledCall(model.loss, "the update's loss", "the benchmark stops") if compile else None

    def update() -> None:
        with compute:
            loss, _, states = (loss_fn or model.loss)(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 20.0)
        optimizer.step()
        model.after_step()
        with compute:
            behavior.update(model, states)

    return prepare(_label("update", precision, compile), update, device, loss_fn)


def run(quick: bool = False, device_choice: str = "auto") -> dict:
    """MPPI, CEM and the tdmpc update for the ~1M (xs) and ~5M (s) JEPA, CPU (and CUDA when present)."""
    devices = benchmark_devices(device_choice)
    sizes = ["xs"] if quick else ["xs", "s"]
    repeats = 3 if quick else 7
    rows = []
    for device in devices:
        precisions = timed_precisions(device, ["fp32", "bf16"])
        for size in sizes:
            params = _params_million(_model(size, device))
            compiled = device.type == "cpu" and not quick
            fast = [planner_case(size, "mppi", device, precision=precision) for precision in precisions]
            if compiled:  # the first call compiles: ~1 min on 2 cores, seconds with inductor's cache
                fast.append(planner_case(size, "mppi", device, compile=True))
            if device.type == "cuda":  # what the CUDA graph saves, measured in the same rounds
                fast.append(planner_case(size, "mppi", device, cuda_graph=False))
            fast += [update_case(size, device, precision=precision) for precision in precisions]
            if not quick:  # also on CUDA: a training run's compile=true (the search has the CUDA graph there)
                fast.append(update_case(size, device, compile=True))
            slow = [planner_case(size, "cem", device)]
            if size == "xs":
                slow += [goal_cem_case(device)] + ([goal_cem_case(device, compile=True)] if compiled else [])
            results = time_interleaved(fast, device, repeats) + time_interleaved(slow, device, 1 if quick else 3)
            for result in results:
                bound = result["gflop"] / result["matmul_gflops"] * 1000
                # goal-cem's result carries its own params_M, which replaces the tdmpc model's
                rows.append({"size": size, "params_M": params, "device": str(device), **result,
                             "matmul_bound_ms": bound, "bound_fraction": bound / result["ms"]})
    reference = nearest_reference(TDMPC2_REFERENCES, cpu_rate(rows), "TD-MPC2")
    for row in rows:
        row["tdmpc2_ms"] = reference["ms"][row["size"]].get(row["what"].split()[0])
        row["speedup_vs_tdmpc2"] = row["tdmpc2_ms"] / row["ms"] if row["tdmpc2_ms"] else None
    print_table("Planner and tdmpc update: ms per call (median; matmul-bound time from this run's matmul rate)",
                ["size", "params (M)", "device", "what", "GFLOP", "ms", "matmul GFLOP/s", "matmul-bound ms",
                 "% of bound", "TD-MPC2 ms", "× TD-MPC2"],
                [[r["size"], r["params_M"], r["device"], r["what"], r["gflop"], r["ms"], r["matmul_gflops"],
                  r["matmul_bound_ms"], 100 * r["bound_fraction"], r["tdmpc2_ms"] or "-",
                  r["speedup_vs_tdmpc2"] or "-"] for r in rows])
    return {"planner": rows, "tdmpc2_reference": reference,
            "planner_settings": {"mppi": "horizon 3, 6 iterations, 512 samples + 24 prior, 64 elites; "
                                         "(bf16): the same with precision=bf16; (compiled): with compile=true "
                                         "(compile_s: seconds of the first call, which compiles)",
                                 "cem": "horizon 12, 10 iterations, 1000 candidates, 100 elites",
                                 "goal-cem": "the jepa_goal preset through MPCController (configs/experiment/"
                                             "jepa_goal.yaml: its model, CEM settings and goal energy)",
                                 "update": f"batch {BATCH}, horizon {HORIZON}; (bf16): precision=bf16; (compiled): "
                                           "compile=true, the world model's loss compiled"}}
