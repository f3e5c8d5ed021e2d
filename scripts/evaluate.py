"""Evaluate a checkpoint: returns on the simulator and world-model metrics, in one report.

    python scripts/evaluate.py checkpoint=runs/<...>/checkpoints/latest.pt episodes=10 out=report.json
    python scripts/evaluate.py checkpoint=<run folder> open_loop=false sensitivity=false planner=null  # returns only

``out=report.json`` also writes ``report.md`` and ``report_*.png`` (keys: ``wm_robotics.evaluation``).
Side by side, with eval return vs env steps plotted against the published reference numbers:

    python scripts/evaluate.py --compare runs/<run_a> runs/<run_b> report_a.json ... [--out compare.png]

(run folders give their metrics.csv and config.yaml; ``.json`` arguments are reports of this script). Reports of
one experiment, training precision, training overrides, task and budget (its seeds) are also aggregated: mean, sd,
IQM and a bootstrap interval of the mean (``wm_robotics.seed_stats``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import gymnasium as gym
import hydra
import yaml
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from wm_robotics.atomic import report_json_path
from wm_robotics.builders import set_torch_threads
from wm_robotics.checkpoint import CheckpointError
from wm_robotics.evaluation import evaluate_checkpoint, write_report
from wm_robotics.plots import BUDGETS, eval_curve, plot_runs, published_results, task_name
from wm_robotics.seed_stats import seed_summary


def _summary(report: dict) -> list[str]:
    """A few console lines for a report."""
    lines = [f"{report['experiment']} on {report['env']} after {report['env_steps']:,} env steps: "
             f"return {report['return_mean']:.1f} ± {report['return_std']:.1f} over {report['episodes']} episodes"]
    if report["open_loop"]:
        ol = report["open_loop"]
        key = next(k for k in ("proprio_nmse", "pixel_mse", "latent_l2_relative") if k in ol)
        lines.append(f"open-loop {key}: h=1 {ol[key][0]:.4g}, h={len(ol[key])} {ol[key][-1]:.4g}"
                     + (f"; reward MAE h=1 {ol['reward_mae'][0]:.3g}, h={len(ol[key])} {ol['reward_mae'][-1]:.3g}"
                        if "reward_mae" in ol else ""))
    if report["latent"]:
        lat = report["latent"]
        lines.append(f"latent: effective rank {lat['effective_rank']:.1f} of {lat['feature_dim']}, std mean "
                     f"{lat['std_mean']:.3g}, collapsed {lat['collapsed']}")
    if report["action_sensitivity"]:
        sens = report["action_sensitivity"]
        lines.append("action sensitivity: " + ", ".join(
            f"{k} model {v:.3g}" + (f" / real {sens['real_mean'][k]:.3g} = {sens['ratio'][k]:.2f}"
                                    if k in sens.get("ratio", {}) else "") for k, v in sens["model_mean"].items()))
    if report["planner"]:
        plan = report["planner"]
        lines.append(f"planner {plan['planner']}: {plan['ms_per_action']:.1f} ms per action"
                     + (f", success {plan['success_rate']:.2f} over {plan['goal_episodes']} goal episodes, "
                        f"distance {plan['start_distance_mean']:.3f} → {plan['final_distance_mean']:.3f} m"
                        if plan["success_rate"] is not None else ""))
    return lines


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        set_torch_threads(cfg.torch_threads)
    except ValueError as error:
        raise SystemExit(f"evaluate.py: {error}") from error
    for name in ("planner_settings", "goal_energy"):
        if cfg[name] is not None and not OmegaConf.is_dict(cfg[name]):
            raise SystemExit(f"evaluate.py: {name} must be a dict such as '{name}={{key:value,key2:value}}' (quoted, "
                             f"or bash splits it at the comma), got {cfg[name]!r}")
    settings = OmegaConf.to_container(cfg.planner_settings) if cfg.planner_settings else None
    goal_energy = OmegaConf.to_container(cfg.goal_energy) if cfg.goal_energy else None
    try:
        out = report_json_path(to_absolute_path(cfg.out)) if cfg.out else None
        report = evaluate_checkpoint(
            to_absolute_path(cfg.checkpoint), cfg.episodes, cfg.seed, cfg.device, env_id=cfg.task, sample=cfg.sample,
            open_loop=cfg.open_loop, sensitivity=cfg.sensitivity, context=cfg.context, horizon=cfg.horizon,
            windows_per_episode=cfg.windows_per_episode, planner=cfg.planner, planner_steps=cfg.planner_steps,
            goal_episodes=cfg.goal_episodes, goal_steps=cfg.goal_steps, planner_settings=settings,
            goal_energy=goal_energy, video=to_absolute_path(cfg.video) if cfg.video else None)
    except (CheckpointError, ValueError, gym.error.Error) as error:  # bad input: one clear line, no traceback
        raise SystemExit(f"evaluate.py: {error}") from error
    print("\n".join(_summary(report)))
    if report.get("video"):
        print(f"video -> {report['video']}")
    if out:
        for path in write_report(report, out):
            print(f"report -> {path}")


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


def _compare_reports(paths: list[Path]) -> None:
    """Reports side by side, one column per report; then each group of seeds aggregated."""
    reports = [json.loads(path.read_text()) for path in paths]

    def pick(report: dict, section: str, key: str, index: int | None = None, fmt: str = ".3g") -> str:
        value = (report.get(section) or {}).get(key)
        value = value[index] if value is not None and index is not None else value
        return "-" if value is None else format(value, fmt)

    rows = [["env", *(r["env"] for r in reports)], ["env steps", *(f"{r['env_steps']:,}" for r in reports)],
            ["training overrides", *(_configuration(r) for r in reports)],
            ["return", *(f"{r['return_mean']:.1f} ± {r['return_std']:.1f}" for r in reports)],
            ["open loop: H, context", *((f"{r['open_loop']['horizons'][-1]}, {r['open_loop']['context']}"
                                         if r.get("open_loop") else "-") for r in reports)]]
    for key in ("latent_l2_relative", "proprio_nmse", "pixel_mse", "reward_mae"):
        rows += [[f"{key} h=1", *(pick(r, "open_loop", key, 0) for r in reports)],
                 [f"{key} h=H", *(pick(r, "open_loop", key, -1) for r in reports)]]
    rows += [["sensitivity ratio (proprio)", *((f"{r['action_sensitivity']['ratio']['proprio']:.2f}"
                                                if "proprio" in (r.get("action_sensitivity") or {}).get("ratio", {})
                                                else "-") for r in reports)],
             ["effective rank", *(pick(r, "latent", "effective_rank", fmt=".1f") for r in reports)],
             ["ms per action", *(pick(r, "planner", "ms_per_action", fmt=".1f") for r in reports)]]
    rows = [row for row in rows if any(cell != "-" for cell in row[1:])]
    _print_table(["metric", *(path.stem for path in paths)], rows)
    _print_seed_summaries(reports)


# overrides that say how a run was made or watched, not what it learned (or that the aggregate keys apart)
_BOOKKEEPING = {"experiment", "experiment_name", "env", "seed", "precision", "steps", "device", "torch_threads",
                "compile", "video", "eval_every", "eval_episodes", "eval_goal_steps", "log_every", "checkpoint_every",
                "offline.eval_every", "offline.log_every", "offline.checkpoint_every"}


# keys whose preset default has changed (tdmpc_cpu's pretrain_updates: 0, then 2500 from session 54), each with
# the value that reports written before the change meant by leaving it out; read from a report's training config
_RESOLVED = {"pretrain_updates": 0}


def _configuration(report: dict) -> str:
    """The report's training overrides that change what is learned, as one string: the last value given to each
    key (a resume may repeat or change one), a leading "+" or "++" dropped, compared as written (``lr=1e-3`` and
    ``lr=0.001`` differ); "preset" when none, "-" when the report does not record them. Each ``_RESOLVED`` key
    counts by its value in the report's ``train_config``, given or by default, shown unless it is the old default."""
    overrides = report.get("train_overrides")
    if overrides is None:
        return "-"
    last = {line.lstrip("+").partition("=")[0]: line.lstrip("+") for line in overrides}
    config = report.get("train_config") or {}
    for key, old_default in _RESOLVED.items():
        if key in config:
            last.pop(key, None)
            if config[key] != old_default:
                last[key] = f"{key}={config[key]}"
    kept = sorted(line for key, line in last.items() if key.lstrip("~") not in _BOOKKEEPING)
    return " ".join(kept) or "preset"


def _run_label(cfg: dict) -> str:
    """A run folder's curve label: its experiment, its precision unless fp32 and its overrides that change what is
    learned (as ``_configuration`` reads them), so runs that differ in those are drawn apart."""
    precision = cfg.get("precision", "fp32")
    configuration = _configuration({"train_overrides": cfg.get("command_overrides"), "train_config": cfg})
    return " ".join([cfg["experiment_name"], *([precision] if precision != "fp32" else []),
                     *([f"[{configuration}]"] if configuration not in ("preset", "-") else [])])


def _repeated_seeds(seeds: list) -> list:
    """The seeds (None: unrecorded, left out) that occur more than once, sorted."""
    return sorted({seed for seed in seeds if seed is not None and seeds.count(seed) > 1})


def _task_cell(report: dict) -> str:
    """The evaluated task, and the trained one when it differs."""
    trained = report.get("trained_env", report["env"])
    return report["env"] if trained == report["env"] else f"{report['env']} (trained on {trained})"


def _played_with(report: dict) -> str:
    """" (played with key=value ...)" for a report whose episodes the preset's planner played with settings other
    than those it trained with (``planner_settings``); "" otherwise, and for reports without ``train_config``."""
    acted, trained = report.get("acted_by") or {}, report.get("train_config")
    if trained is None or "settings" not in acted:
        return ""
    own = trained.get("behavior", {}).get("settings", {})
    changed = {key: value for key, value in acted["settings"].items() if own.get(key) != value}
    return f" (played with {' '.join(f'{key}={value}' for key, value in changed.items())})" if changed else ""


def _print_seed_summaries(reports: list[dict]) -> None:
    """For each experiment, training precision, training overrides, task and budget given by ≥ 2 reports (its
    seeds): the aggregate of their returns; evaluations of the sampled policy (``sample=true``) apart from the
    deterministic ones, and episodes played with other planner settings (``_played_with``) apart too. Reports that
    do not record the precision or the overrides show "-" and group together; a note says so when others of that
    experiment, task and budget record them. A group with two reports of one training seed is not aggregated (a note
    says so): they are not two seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for report in reports:
        experiment = report["experiment"] + (" (sampled policy)" if report.get("sample") else "") + _played_with(report)
        key = (experiment, report.get("precision", "-"), _configuration(report), _task_cell(report),
               report["env_steps"])
        groups[key].append(report)
    rows = []
    for (experiment, precision, configuration, task, steps), members in groups.items():
        repeated = _repeated_seeds([report.get("train_seed") for report in members])
        if repeated:
            print(f"note: {experiment} ({precision}, {configuration}) on {task} at {steps:,} steps has several reports "
                  f"of training seed(s) {repeated}: not aggregated, give one report per seed")
        elif len(members) > 1:
            agg = seed_summary([report["return_mean"] for report in members])
            rows.append([experiment, precision, configuration, task, f"{steps:,}", agg["seeds"], f"{agg['mean']:.1f}",
                         f"{agg['std']:.1f}", f"{agg['iqm']:.1f}", f"{agg['ci_low']:.1f}–{agg['ci_high']:.1f}"])
    if rows:
        print()
        _print_table(["experiment", "precision", "overrides", "env", "env steps", "seeds", "mean return", "sd", "IQM",
                      "95% bootstrap CI of the mean"], rows)
    recorded = {(experiment, task, steps) for experiment, precision, configuration, task, steps in groups
                if "-" not in (precision, configuration)}
    for (experiment, precision, configuration, task, steps), members in groups.items():
        if "-" in (precision, configuration) and (experiment, task, steps) in recorded:
            print(f"note: {len(members)} {experiment} report(s) on {task} at {steps:,} steps do not record their "
                  f"training precision or overrides and are aggregated apart from those that do")


def compare(argv: list[str]) -> None:
    """``--compare RUN_OR_REPORT ...``: print runs (and reports) side by side, plot runs vs references."""
    parser = argparse.ArgumentParser(prog="evaluate.py --compare", description="compare runs or reports")
    parser.add_argument("--compare", nargs="+", required=True, metavar="RUN_DIR_OR_REPORT_JSON")
    parser.add_argument("--out", default="compare.png", help="plot path (one per task: <stem>_<task>.png)")
    parser.add_argument("--budget", default="100k", choices=BUDGETS, help="reference numbers drawn")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.compare]
    for path in paths:
        if not (path / "config.yaml").is_file() and not (path.suffix == ".json" and path.is_file()):
            parser.error(f"{path} is neither a run folder (with config.yaml) nor a report .json of this script")
    reports, runs = [p for p in paths if p.suffix == ".json"], [p for p in paths if p.suffix != ".json"]
    groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[tuple[str, str], list] = defaultdict(list)  # (task, label) → its runs' seeds
    rows = []
    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        task = task_name(cfg["env"]["id"])
        references = published_results().get(args.budget, {}).get(task, {})
        refs = ", ".join(f"{name} {value}" for name, value in references.items()) or "-"
        label = _run_label(cfg)
        try:
            steps, returns = eval_curve(run)
        except (ValueError, FileNotFoundError) as error:
            rows.append([run.name, label, task, cfg["seed"], "-", f"no eval yet ({error})", "-", refs])
            continue
        groups[task][label].append(run)
        seeds[task, label].append(cfg["seed"])
        rows.append([run.name, label, task, cfg["seed"], f"{int(steps[-1]):,}", f"{returns[-1]:.1f}",
                     f"{returns.max():.1f}", refs])
    if runs:
        _print_table(["run", "experiment", "task", "seed", "env steps", "final eval", "best eval",
                      f"published @ {args.budget}"], rows)
    for task, by_experiment in groups.items():
        for label in by_experiment:
            if _repeated_seeds(seeds[task, label]):
                print(f"note: the {label} curve on {task} averages runs of one seed more than once "
                      f"(seeds {seeds[task, label]})")
        out = Path(args.out)
        out = out if len(groups) == 1 else out.with_name(f"{out.stem}_{task}{out.suffix}")
        try:
            print(f"plot -> {plot_runs(dict(by_experiment), task, out, args.budget)}")
        except ValueError as error:  # e.g. online and offline runs of one task: the table above stands
            print(f"no plot of {task}: {error}", file=sys.stderr)
    if reports:
        print()
        _compare_reports(reports)


if __name__ == "__main__":
    if "--compare" in sys.argv[1:]:
        compare(sys.argv[1:])
    else:
        main()
