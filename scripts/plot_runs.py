"""Plot eval return vs env steps for run folders, against the published reference numbers.

    python scripts/plot_runs.py --task cartpole-swingup --out docs/cartpole_swingup.png \
        dreamer_cpu=runs/dreamer_cpu_seed0,runs/dreamer_cpu_seed1
"""

from __future__ import annotations

import argparse

from wm_robotics.plots import plot_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR[,RUN_DIR...] (one label per preset, folders = seeds)")
    parser.add_argument("--task", required=True, help="task name in published_results.json, e.g. cartpole-swingup")
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--budget", default="100k", choices=["100k", "500k", "1M"])
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        label, _, folders = item.partition("=")
        if not folders:
            parser.error(f"expected LABEL=RUN_DIR[,RUN_DIR...], got {item!r}")
        runs[label] = folders.split(",")
    print(f"plot -> {plot_runs(runs, args.task, args.out, args.budget)}")


if __name__ == "__main__":
    main()
