"""Dream speed of World Models' CMA-ES: the whole population in one batch vs one candidate at a time.

One CMA-ES generation scores P linear controllers on R dreamed rollouts of H steps each in the
MDN-RNN (``VMCWorldModel``, pixel sizes, cartpole's 1-d action). *Batched*: all P·R rollouts in one
``dream_returns`` call (the controller's way); *reference*: the same P·R rollouts, one candidate's
R rollouts per call, P calls. Both are timed in interleaved rounds in the same run; the ratio is
the speed-up of batching the population.
"""

from __future__ import annotations

import time

import torch

from wm_robotics.behaviors.cmaes_controller import dream_returns
from wm_robotics.benchmarks.timing import benchmark_devices, print_table, sync
from wm_robotics.models.vmc import VMCWorldModel


def measure(device: torch.device, size: str = "xs", population: int = 64, rollouts: int = 16, horizon: int = 100,
            rounds: int = 3) -> dict:
    """Median seconds per generation, batched and per candidate, and rollouts / dream steps per second."""
    torch.manual_seed(0)
    model = VMCWorldModel.from_size(size, {"pixels": (64, 64, 3)}, 1).to(device).eval()
    start = {key: torch.randn(rollouts, value.shape[-1], device=device) for key, value in model.initial(1).items()}
    weight = 0.1 * torch.randn(population, 1, model.feature_dim, device=device)
    bias = torch.zeros(population, 1, device=device)

    def batched() -> None:
        dream_returns(model, start, weight, bias, horizon)

    def one_at_a_time() -> None:
        for p in range(population):
            dream_returns(model, start, weight[p:p + 1], bias[p:p + 1], horizon)

    cases = {"batched": batched, "one candidate at a time": one_at_a_time}
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for index in range(rounds + 1):  # the first round warms up kernels and allocators
        for name, work in cases.items():
            sync(device)
            begin = time.perf_counter()
            work()
            sync(device)
            if index:
                seconds[name].append(time.perf_counter() - begin)
    rows = []
    for name, values in seconds.items():
        median = sorted(values)[len(values) // 2]
        rows.append({"device": str(device), "size": size, "mode": name, "population": population,
                     "rollouts": rollouts, "horizon": horizon, "seconds_per_generation": median,
                     "rollouts_per_s": population * rollouts / median,
                     "dream_steps_per_s": population * rollouts * horizon / median})
    reference = rows[1]["seconds_per_generation"]
    for row in rows:
        row["speedup_vs_one_at_a_time"] = reference / row["seconds_per_generation"]
    return rows


def run(quick: bool = False, device_choice: str = "auto") -> dict:
    """CPU (and CUDA when present), xs and s; prints a table."""
    devices = benchmark_devices(device_choice)
    sizes = ("xs",) if quick else ("xs", "s")
    population, rounds = (16, 1) if quick else (64, 3)
    rows = [row for device in devices for size in sizes
            for row in measure(device, size, population=population, rounds=rounds)]
    print_table("Dream: one CMA-ES generation (P candidates × R rollouts × H steps in the MDN-RNN; median)",
                ["device", "size", "mode", "P", "R", "H", "s / generation", "rollouts/s", "dream steps/s",
                 "× one at a time"],
                [[r["device"], r["size"], r["mode"], r["population"], r["rollouts"], r["horizon"],
                  r["seconds_per_generation"], r["rollouts_per_s"], r["dream_steps_per_s"],
                  r["speedup_vs_one_at_a_time"]] for r in rows])
    return {"dream": rows}
