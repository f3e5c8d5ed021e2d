"""Planner and TD-MPC2 update speed: ms per MPPI / CEM action and ms per ``tdmpc`` update, ~1M and ~5M JEPA.

Default planner settings (MPPI: TD-MPC2's horizon 3, 6 iterations, 512 + 24 prior samples; CEM:
PlaNet's horizon 12, 10 iterations, 1000 candidates) on a cartpole-sized model (5-d proprio, 1
action), one environment, objective = rewards + terminal Q(z, π(z)) (2 of the Q heads). The update
is the ``tdmpc`` preset's (batch 256, horizon 3): world-model step, target EMA and policy-prior step.

FLOPs per call are counted with torch's ``FlopCounterMode``. The reference measured in the same run
is the machine's fp32 matmul rate now (a 1024³ matmul): ``matmul_bound_ms`` = FLOPs / that rate is
what a purely matmul-bound implementation would take, so the ratio survives a busy machine.
TD-MPC2's own code on this project's 2-core CPU (torch 2.13, compile off; DESIGN.md, measured by
the project, not re-run here): 1M 154 ms/action and 115–126 ms/update, 5M 438 and 435–452.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from wm_robotics.behaviors.mpc_behavior import MPCBehavior
from wm_robotics.benchmarks.timing import print_table
from wm_robotics.models.jepa import JEPAWorldModel
from wm_robotics.models.nets import adam

REFERENCE_MS = {"xs": {"mppi": 154.0, "update": 120.5}, "s": {"mppi": 438.0, "update": 443.5}}
BATCH, HORIZON = 256, 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(work: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """(median ms, GFLOP) of ``work`` after one warm-up call; FLOPs counted on one extra call."""
    work()
    with FlopCounterMode(display=False) as counter:
        work()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        work()
        _sync(device)
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2], counter.get_total_flops() / 1e9


def matmul_gflops(device: torch.device, size: int = 1024, repeats: int = 20) -> float:
    """fp32 GFLOP/s of a ``size``³ matmul on ``device`` now (the same-run reference)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    ms, _ = _timed(lambda: [a @ b for _ in range(repeats)], device, 3)
    return 2 * size ** 3 * repeats / (ms / 1000) / 1e9


def _model(size: str, device: torch.device) -> JEPAWorldModel:
    torch.manual_seed(0)
    return JEPAWorldModel.from_size(size, {"proprio": (5,)}, 1, target="stopgrad", horizon=HORIZON).to(device)


def time_planner(size: str, planner: str, device: torch.device, repeats: int) -> dict:
    """ms per planned action (one environment) at the planner's default settings."""
    model = _model(size, device).eval()
    behavior = MPCBehavior(model, planner=planner).to(device)
    with torch.no_grad():
        state = {"latent": model.encoder({"proprio": torch.randn(1, 5, device=device)})}
    first = torch.zeros(1, dtype=torch.bool, device=device)
    ms, gflop = _timed(lambda: behavior.plan(model, state, first, sample=False), device, repeats)
    return {"what": planner, "ms": ms, "gflop": gflop}


def time_update(size: str, device: torch.device, repeats: int) -> dict:
    """ms per ``tdmpc`` update: model loss + backward + Adam + target EMA + policy-prior step."""
    model = _model(size, device)
    behavior = MPCBehavior(model).to(device)
    optimizer = adam(model.parameters(), 3e-4)
    steps = HORIZON + 1
    batch = {"obs/proprio": torch.randn(BATCH, steps, 5, device=device),
             "action": torch.rand(BATCH, steps, 1, device=device) * 2 - 1,
             "reward": torch.rand(BATCH, steps, device=device),
             "is_first": torch.zeros(BATCH, steps, dtype=torch.bool, device=device),
             "is_terminal": torch.zeros(BATCH, steps, dtype=torch.bool, device=device)}

    def update() -> None:
        loss, _, states = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 20.0)
        optimizer.step()
        model.after_step()
        behavior.update(model, states)

    ms, gflop = _timed(update, device, repeats)
    return {"what": "update", "ms": ms, "gflop": gflop}


def run(quick: bool = False) -> dict:
    """MPPI, CEM and the tdmpc update for the ~1M (xs) and ~5M (s) JEPA, CPU (and CUDA when present)."""
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    sizes = ["xs"] if quick else ["xs", "s"]
    repeats = 3 if quick else 7
    rows = []
    for device in devices:
        rate = matmul_gflops(device)
        for size in sizes:
            params = sum(p.numel() for name, p in _model(size, device).named_parameters()
                         if not name.startswith("target")) / 1e6
            results = [time_planner(size, "mppi", device, repeats), time_update(size, device, repeats),
                       time_planner(size, "cem", device, 1 if quick else 3)]
            for result in results:
                bound = result["gflop"] / rate * 1000
                reference = REFERENCE_MS[size].get(result["what"])
                rows.append({"size": size, "params_M": params, "device": str(device), **result,
                             "matmul_gflops": rate, "matmul_bound_ms": bound, "bound_fraction": bound / result["ms"],
                             "tdmpc2_ms": reference,
                             "speedup_vs_tdmpc2": reference / result["ms"] if reference else None})
    print_table("Planner and tdmpc update: ms per call (median; matmul-bound time from this run's matmul rate)",
                ["size", "params (M)", "device", "what", "GFLOP", "ms", "matmul GFLOP/s", "matmul-bound ms",
                 "% of bound", "TD-MPC2 ms", "× TD-MPC2"],
                [[r["size"], r["params_M"], r["device"], r["what"], r["gflop"], r["ms"], r["matmul_gflops"],
                  r["matmul_bound_ms"], 100 * r["bound_fraction"], r["tdmpc2_ms"] or "-",
                  r["speedup_vs_tdmpc2"] or "-"] for r in rows])
    return {"planner": rows, "planner_reference_ms": REFERENCE_MS,
            "planner_settings": {"mppi": "horizon 3, 6 iterations, 512 samples + 24 prior, 64 elites",
                                 "cem": "horizon 12, 10 iterations, 1000 candidates, 100 elites",
                                 "update": f"batch {BATCH}, horizon {HORIZON}"}}
