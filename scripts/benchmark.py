"""Speed benchmarks: print Markdown tables and write JSON.

    python scripts/benchmark.py envs            # env steps/s vs raw dm_control and Shimmy
    python scripts/benchmark.py learner         # ms per world-model / actor-critic update, XS and S
    python scripts/benchmark.py replay          # peak RSS with 100k pixel steps stored, sampling ms
    python scripts/benchmark.py dream           # World Models' CMA-ES dream: population batched vs one at a time
    python scripts/benchmark.py planner         # ms per MPPI / CEM action and per tdmpc update, ~1M and ~5M JEPA
    python scripts/benchmark.py all --out benchmark_results/all.json
    python scripts/benchmark.py envs --quick    # shorter rounds, for a smoke check
    python scripts/benchmark.py planner --device cuda   # GPU rows only (learner, dream, planner)
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before heavy imports: re-executes once on jemalloc when installed
    from wm_robotics.allocator import run_on_jemalloc

    run_on_jemalloc()  # WM_ROBOTICS_MALLOC=system keeps the C library's malloc

import argparse
import importlib
import inspect
from typing import Callable

from wm_robotics.benchmarks.timing import DEVICE_CHOICES, benchmark_devices, write_json

#: in the order ``all`` runs them: the replay's first, since it reports the process's peak RSS (the learner's
#: S-pixel updates alone reach ~3.3 GB, and jemalloc keeps freed pages resident)
SUITES = {"replay": "wm_robotics.benchmarks.replay", "envs": "wm_robotics.benchmarks.envs",
          "learner": "wm_robotics.benchmarks.learner", "dream": "wm_robotics.benchmarks.dream",
          "planner": "wm_robotics.benchmarks.planner"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=[*SUITES, "all"], help="which benchmark to run")
    parser.add_argument("--out", default=None, help="JSON path (default benchmark_results/<what>.json)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="torch device of the model benchmarks: auto = the CPU, plus CUDA when present")
    args = parser.parse_args()
    try:
        benchmark_devices(args.device)
    except ValueError as error:
        parser.error(str(error))
    names = list(SUITES) if args.what == "all" else [args.what]
    runs = {name: _suite(name) for name in names}
    if args.device != "auto" and not any(map(_takes_device, runs.values())):
        parser.error(f"{args.what} runs on the CPU alone: --device applies to "
                     f"{[name for name in SUITES if _takes_device(_suite(name))]}")
    results = {}
    for run in runs.values():
        results.update(run(quick=args.quick, **({"device_choice": args.device} if _takes_device(run) else {})))
    path = write_json(args.out or f"benchmark_results/{args.what}.json", {"args": vars(args), **results})
    print(f"\nJSON -> {path}")


def _suite(name: str) -> Callable[..., dict]:
    """The ``run`` function of a benchmark suite."""
    return importlib.import_module(SUITES[name]).run


def _takes_device(run: Callable[..., dict]) -> bool:
    """Whether a suite times torch models on a chosen device (the others time the simulator or the replay)."""
    return "device_choice" in inspect.signature(run).parameters


if __name__ == "__main__":
    main()
