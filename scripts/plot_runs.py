"""Plot eval return vs env steps (updates for offline runs) for run folders, against the published reference
numbers, and print the same curves as a markdown table (each seed and the mean, at the evaluations all seeds
reached).

    python scripts/plot_runs.py --task cartpole-swingup --out docs/cartpole_swingup.png \
        dreamer_cpu=runs/dreamer_cpu_seed0,runs/dreamer_cpu_seed1
    cd docs/results && python ../../scripts/plot_runs.py --task cartpole-swingup --out /tmp/c.png \
        baseline=tdmpc_cpu_cartpole_swingup_100k_seed0.csv,tdmpc_cpu_cartpole_swingup_100k_seed1.csv \
        bf16=tdmpc_cpu_cartpole_swingup_bf16_seed0.csv,tdmpc_cpu_cartpole_swingup_bf16_seed1.csv
"""

from __future__ import annotations

import argparse

from wm_robotics.plots import BUDGETS, eval_table, plot_runs, published_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN[,RUN...] (one label per preset; RUN = a seed's run folder "
                                                "or its metrics CSV)")
    parser.add_argument("--task", required=True, help="task name in published_results.json, e.g. cartpole-swingup")
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--budget", default="100k", choices=BUDGETS)
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        label, _, folders = item.partition("=")
        if not folders:
            parser.error(f"expected LABEL=RUN[,RUN...], got {item!r}")
        if label in runs:
            parser.error(f"label {label!r} given twice: list all its runs once, {label}=RUN,RUN,...")
        runs[label] = folders.split(",")
    known = sorted(published_results().get(args.budget, {}))
    if args.task not in known:
        print(f"warning: no published {args.budget} numbers for task {args.task!r}, so no reference lines; "
              f"tasks with them: {', '.join(known)}")
    try:  # a missing run or runs that share no evaluation: one line, before anything is printed
        table = eval_table(runs)
        path = plot_runs(runs, args.task, args.out, args.budget)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    print(table)
    print(f"plot -> {path}")


if __name__ == "__main__":
    main()
