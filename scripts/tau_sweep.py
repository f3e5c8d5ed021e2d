"""World Models' τ sweep: evolve the controller in dreams of several temperatures, compare dream and real returns.

    python scripts/tau_sweep.py runs/<world_models run> --temperatures 0.5 1.0 1.5 --generations 100 \\
        --episodes 5 --threads 1 --out docs/results/world_models_tau_sweep.json

Uses the checkpoint's V + M (``checkpoints/latest.pt``) and its run's episode files; writes the JSON
and a markdown table beside it (``.md``). See ``wm_robotics.temperature_sweep``.
"""

from __future__ import annotations

import argparse

from wm_robotics.atomic import report_json_path, write_json_and_markdown
from wm_robotics.builders import set_torch_threads
from wm_robotics.checkpoint import CheckpointError
from wm_robotics.temperature_sweep import markdown, temperature_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a world_models run folder (or its checkpoints/latest.pt)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 1.0, 1.5])
    parser.add_argument("--generations", type=int, default=100, help="CMA-ES generations per temperature")
    parser.add_argument("--episodes", type=int, default=5, help="real episodes per temperature")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default="tau_sweep.json", help="JSON path; the markdown goes beside it")
    args = parser.parse_args()
    try:
        report_json_path(args.out)
    except ValueError as error:
        parser.error(str(error))
    try:
        set_torch_threads(args.threads, "--threads")
    except ValueError as error:
        parser.error(str(error))
    try:
        result = temperature_sweep(args.checkpoint, args.temperatures, args.generations, args.episodes,
                                   seed=args.seed, device=args.device)
    except (CheckpointError, ValueError) as error:
        raise SystemExit(f"tau_sweep.py: {error}") from error
    print(markdown(result))
    print(f"-> {', '.join(map(str, write_json_and_markdown(args.out, result, markdown(result))))}")


if __name__ == "__main__":
    main()
