"""Learning curves of run folders (or their metrics CSVs): plots with the published reference
numbers drawn in, tables."""

from __future__ import annotations

import csv
import functools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

BUDGETS = ("100k", "500k", "1M")  # env-step budgets of the published reference numbers


def published_results() -> dict:
    """The reference returns shipped in ``wm_robotics/published_results.json`` (sources inside)."""
    return json.loads(resources.files("wm_robotics").joinpath("published_results.json").read_text())


def eval_curve(run: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, eval return) rows of a run folder's ``metrics.csv``, or of such a CSV itself (e.g. one kept in
    ``docs/results/``); steps are env steps, or updates for an offline run (:func:`run_clock`)."""
    path = Path(run) if Path(run).suffix == ".csv" else Path(run) / "metrics.csv"
    with path.open() as handle:
        rows = [(float(r["step"]), float(r["eval_return"])) for r in csv.DictReader(handle) if r.get("eval_return")]
    if not rows:
        raise ValueError(f"{path} has no eval_return rows yet")
    steps, returns = np.array(rows).T
    return steps, returns


def _run_setting(run: str | Path, key: str) -> Any:
    """``key`` of a run folder's ``config.yaml``; None for a metrics CSV on its own (or a key it lacks)."""
    config = Path(run) / "config.yaml"
    return None if Path(run).suffix == ".csv" or not config.exists() else OmegaConf.select(OmegaConf.load(config), key)


def run_clock(run: str | Path) -> str:
    """What a run's metrics ``step`` counts: "updates" for an offline run folder (its ``config.yaml`` sets
    ``offline.data``), else "env steps" (a CSV on its own is taken as an online run's)."""
    return "updates" if _run_setting(run, "offline.data") else "env steps"


def task_name(env_id: str) -> str:
    """``wm_robotics/cartpole-swingup-v0`` → ``cartpole-swingup`` (the published_results.json name; a goal task keeps
    its ``-goal``)."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1])


def run_task(run: str | Path) -> str | None:
    """The task a run folder trained on (``task_name`` of its env id); None for a metrics CSV on its own."""
    env_id = _run_setting(run, "env.id")
    return None if env_id is None else task_name(env_id)


def _common_curves(runs: list[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """(steps (T,), returns (seeds, T)) at the evaluation steps every seed has (their grids may differ)."""
    curves = [eval_curve(run) for run in runs]
    shared = functools.reduce(np.intersect1d, [steps for steps, _ in curves])
    if not len(shared):
        raise ValueError(f"{[str(run) for run in runs]} share no evaluation step: their curves cannot be averaged")
    return shared, np.stack([returns[np.isin(steps, shared)] for steps, returns in curves])


def eval_table(runs: dict[str, list[str | Path]]) -> str:
    """Markdown table of eval return per evaluation step: each seed, then the mean, for every label."""
    curves = {label: _common_curves(folders) for label, folders in runs.items()}
    columns = sorted({step for steps, _ in curves.values() for step in steps})
    header = "| run | " + " | ".join(f"{step / 1000:g}k" for step in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for label, folders in runs.items():
        steps, returns = curves[label]
        where = {step: index for index, step in enumerate(steps)}
        rows = [(f"{label}, {Path(run).stem if Path(run).suffix == '.csv' else Path(run).name}", values)
                for run, values in zip(folders, returns)] + [(f"**{label}, mean**", returns.mean(0))]
        for name, values in rows:
            cells = [f"{values[where[step]]:.1f}" if step in where else "–" for step in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_runs(runs: dict[str, list[str | Path]], task: str, out: str | Path, budget: str = "100k") -> Path:
    """One line per label (mean over its seeds, band = min..max) plus dashed published references (env-step
    budgets: drawn for online runs only; offline runs are plotted against updates)."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {list(BUDGETS)}")
    clocks = {run_clock(run) for folders in runs.values() for run in folders}
    if len(clocks) > 1:
        raise ValueError("the runs mix online runs (env steps) and offline runs (updates): plot them apart")
    clock = clocks.pop()
    tasks = {run_task(run) for folders in runs.values() for run in folders} - {None}
    if len(tasks) > 1 or tasks - {task}:  # runs averaged across tasks, or drawn under another task's references
        raise ValueError(f"the run folders trained on {sorted(tasks)} and the plot is for --task {task}: plot each "
                         "task apart, under its own name")
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for label, folders in runs.items():
        steps, returns = _common_curves(folders)
        axis.plot(steps, returns.mean(0), marker="o", label=f"{label} ({len(folders)} seeds)")
        axis.fill_between(steps, returns.min(0), returns.max(0), alpha=0.2)
    label_x = axis.get_yaxis_transform()  # x in axes fraction, y in data units
    references = published_results().get(budget, {}).get(task, {}) if clock == "env steps" else {}
    for index, (name, value) in enumerate(references.items()):
        axis.axhline(value, linestyle="--", linewidth=1, color="grey")
        axis.text(0.01 + 0.33 * index, value, f"{name} @ {budget}: {value}", transform=label_x, fontsize=7,
                  va="bottom")
    axis.set_xlabel(clock)
    axis.set_ylabel("eval return")
    axis.set_title(task)
    axis.set_xlim(left=0)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
