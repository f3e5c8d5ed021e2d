"""Evaluate an agent on the simulator (returns) and a checkpoint's world model (one report).

``evaluate_checkpoint`` returns a JSON-ready dict; ``write_report`` writes it as JSON (atomic),
a markdown table (``.md``) and PNG plots (``_open_loop.png``, ``_sensitivity.png``) side by side.

Report keys (sections are ``null`` when skipped):

- metadata: ``checkpoint`` (the file read, resolved), ``env`` (evaluated task), ``trained_env``,
  ``experiment``, ``model_kind``, ``obs_mode``, ``train_seed``, ``precision`` and ``train_overrides`` (of the
  training run: ``scripts/train.py``'s command-line overrides; null for a config not made by it), ``train_config``
  (the training run's resolved configuration),
  ``env_steps``, ``updates``, ``device``, ``seed`` (of the first evaluation episode), ``sample``;
- returns (the policy's mean action unless ``sample``): ``return_mean``, ``return_std``,
  ``return_min``, ``return_max``, ``episodes``, ``returns``, ``lengths``, ``episode_seeds``; ``acted_by``
  (the behaviour ``kind``; a planning preset's ``planner`` and ``settings``, with ``planner_settings`` applied
  when ``planner`` is the preset's own; a goal preset's ``objective`` and ``actions``: uniform random, as its
  return episodes have no goal to plan toward);
- ``open_loop``: :func:`wm_robotics.wm_metrics.open_loop_errors` on the return episodes
  (held out: the model never trained on them), errors per horizon 1..H, reward error included;
- ``latent``: :func:`wm_robotics.wm_metrics.latent_diagnostics` of their posterior features;
- ``action_sensitivity``: :func:`wm_robotics.wm_metrics.action_sensitivity`, model vs simulator;
- ``planner``: ``planner``, ``ms_per_action``, ``actions_timed`` of an ``MPCController`` on the
  first episode's observations, the ``settings`` and ``goal_energy`` it used; on goal tasks also
  ``success_rate``, ``goal_episodes``, ``goal_steps`` and start/final goal distances
  (:func:`wm_robotics.wm_metrics.goal_reaching`), else ``success_rate`` null;
- ``seconds``: wall time of each part; ``video``: the first episode's video when written.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import wm_robotics.envs as envs
from wm_robotics import wm_metrics
from wm_robotics.agent import Agent, agent_from_checkpoint, check_task
from wm_robotics.atomic import report_json_path, write_atomic, write_json_and_markdown
from wm_robotics.builders import resolve_device
from wm_robotics.checkpoint import checkpoint_file, load_checkpoint
from wm_robotics.control import MPCController, preset_planner
from wm_robotics.data.episodes import EpisodeRecorder
from wm_robotics.video import annotate, real_time_fps, upscale, video_path, write_video


@dataclass
class ReturnReport:
    """Episode returns of an evaluation (``frames`` of the first episode when recorded, ``episodes``
    in the episode-file format when recorded)."""

    returns: list[float]
    lengths: list[int]
    frames: list[np.ndarray] = field(default_factory=list, repr=False)
    episodes: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def mean(self) -> float:
        """Mean episode return."""
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        """Standard deviation of the episode returns (population, ddof 0)."""
        return float(np.std(self.returns))

    def summary(self) -> dict[str, float | list[float]]:
        """JSON-ready: mean, std, min, max, episodes and each return."""
        return {"return_mean": self.mean, "return_std": self.std, "return_min": float(np.min(self.returns)),
                "return_max": float(np.max(self.returns)), "episodes": len(self.returns), "returns": self.returns}


def evaluate_returns(agent: Agent, env: gym.Env, episodes: int, seed: int = 0, record_first: bool = False,
                     sample: bool = False, record_episodes: bool = False) -> ReturnReport:
    """Run ``episodes`` episodes (seeds ``seed``…) with the agent's deterministic policy by default.

    With ``record_first`` the first episode's frames are recorded: the observed ``pixels`` when the
    env observes them (the same image, rendered once), else ``env.render()`` (the env must have
    ``render_mode="rgb_array"``); with ``record_episodes`` every episode is kept as arrays.
    """
    def frame(obs: dict[str, np.ndarray]) -> np.ndarray:
        return obs["pixels"] if "pixels" in obs else env.render()

    report = ReturnReport([], [])
    for index in range(episodes):
        obs, _ = env.reset(seed=seed + index)
        agent.reset(1)
        recorder = EpisodeRecorder(obs) if record_episodes else None
        is_first, done, total, length = True, False, 0.0, 0
        record = record_first and index == 0
        if record:
            report.frames.append(frame(obs))
        while not done:
            batch = {key: value[None] for key, value in obs.items()}
            action = agent.act(batch, np.array([is_first]), sample=sample)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total, length, is_first, done = total + float(reward), length + 1, False, terminated or truncated
            if recorder is not None:
                recorder.add(action, obs, reward, terminated, truncated)
            if record:
                report.frames.append(frame(obs))
        report.returns.append(total)
        report.lengths.append(length)
        if recorder is not None:
            report.episodes.append(recorder.episode())
    return report


def _plans_toward_a_goal(behavior: dict[str, Any]) -> bool:
    """Whether a preset's planner plans toward a goal: its return episodes have none, and play uniform random
    actions (``MPCBehavior``)."""
    return preset_planner(behavior) is not None and behavior.get("objective") == "goal"


def _acted_by(behavior: dict[str, Any]) -> dict[str, Any]:
    """The behaviour that played the episodes: its kind, and a planning preset's planner and settings."""
    planner = preset_planner(behavior)
    if planner is None:
        return {"kind": behavior.get("kind")}
    if _plans_toward_a_goal(behavior):
        return {"kind": "mpc", "objective": "goal", "actions": "uniform random"}
    return {"kind": "mpc", "planner": planner, "settings": dict(behavior.get("settings", {}))}


def evaluate_checkpoint(checkpoint: str | os.PathLike, episodes: int = 10, seed: int = 100_000, device: str = "auto",
                        env_id: str | None = None, sample: bool = False, open_loop: bool = True,
                        sensitivity: bool = True, context: int = 20, horizon: int = 30, windows_per_episode: int = 10,
                        planner: str | None = "mppi", planner_steps: int = 10, goal_episodes: int = 2,
                        goal_steps: int | None = None, planner_settings: dict[str, Any] | None = None,
                        goal_energy: dict[str, Any] | None = None,
                        video: str | os.PathLike | None = None) -> dict[str, Any]:
    """The full report of a checkpoint (keys in the module docstring) on ``env_id`` (default: its own task).

    Raises ``CheckpointError`` for a file that is not a wm_robotics checkpoint and ValueError for
    a task whose observation or action shapes differ from the checkpoint's.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if planner is not None and (planner_steps < 1 or goal_episodes < 0 or (goal_steps is not None and goal_steps < 1)):
        raise ValueError(f"planner_steps and goal_steps must be at least 1 and goal_episodes at least 0, got "
                         f"{planner_steps}, {goal_steps} and {goal_episodes}")
    if planner is None and (planner_settings or goal_energy):
        raise ValueError("planner_settings and goal_energy set how the planner plans: they need a planner "
                         "(planner=cem or mppi), not planner=null")
    if open_loop or sensitivity:
        wm_metrics.check_windows(context, horizon, windows_per_episode)
    clock, seconds = time.perf_counter(), {}
    torch_device = resolve_device(str(device))
    payload = load_checkpoint(checkpoint, map_location=torch_device)
    cfg = payload["config"]
    env_id = env_id or cfg["env"]["id"]
    kwargs = envs.env_kwargs(cfg)
    env = envs.make_env(env_id, render_mode="rgb_array", **kwargs)
    check_task(payload, env, env_id, checkpoint)
    goal_task = "success" in env.reset(seed=seed)[1]
    if planner == "policy" and goal_task:
        raise ValueError(f"{env_id} is a goal task and planner='policy' cannot plan toward a goal: use planner=cem "
                         "or mppi, or planner=null for returns and model metrics only")
    if goal_energy and not goal_task:
        raise ValueError(f"goal_energy sets how a planner reaches a goal, but {env_id} has none (the planner plans "
                         "on reward): leave goal_energy out, or evaluate a goal task")
    behavior = cfg["behavior"]
    if planner_settings and planner is not None and preset_planner(behavior) == planner \
            and not _plans_toward_a_goal(behavior):
        # the episodes are played by the preset's own planner: the settings apply to them as to the timed one
        behavior = {**behavior, "settings": {**behavior.get("settings", {}), **planner_settings}}
        payload = {**payload, "config": {**cfg, "behavior": behavior}}
    video = None if video is None else video_path(video)  # its suffix checked before the episodes
    agent = agent_from_checkpoint(payload, torch_device)
    # built first, so that a bad planner, setting or goal energy fails before minutes of episodes
    controller = MPCController(payload, str(torch_device), planner, goal_energy, **(planner_settings or {})) \
        if planner else None
    torch.manual_seed(seed)  # the RSSM samples its latents: seeded, a report is reproducible
    returns = evaluate_returns(agent, env, episodes, seed, record_first=video is not None, sample=sample,
                               record_episodes=open_loop or sensitivity or bool(planner))
    seeds = list(range(seed, seed + episodes))
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint_file(checkpoint).resolve()), "env": env_id, "trained_env": cfg["env"]["id"],
        "experiment": cfg["experiment_name"], "model_kind": cfg["model"]["kind"], "obs_mode": cfg["obs_mode"],
        "train_seed": cfg.get("seed"), "precision": cfg.get("precision", "fp32"),
        "train_overrides": cfg.get("command_overrides"), "train_config": cfg,
        "env_steps": payload["counters"]["env_steps"], "updates": payload["counters"]["updates"],
        "device": str(torch_device), "seed": seed, "sample": sample, **returns.summary(), "lengths": returns.lengths,
        "episode_seeds": seeds, "acted_by": _acted_by(behavior), "open_loop": None, "latent": None,
        "action_sensitivity": None, "planner": None}
    seconds["returns"] = time.perf_counter() - clock
    if video is not None:
        frames = [annotate(upscale(f, 256), [env_id, f"t={t}"]) for t, f in enumerate(returns.frames)]
        report["video"] = str(write_video(video, frames, real_time_fps(env.metadata, video)))
    model, low, high = agent.model, payload["action_low"], payload["action_high"]
    shortest = min(returns.lengths) + 1  # observations in the shortest episode
    if (open_loop or sensitivity) and context + horizon > shortest:
        context = max(1, shortest * context // (context + horizon))
        horizon = shortest - context
        warnings.warn(f"episodes have only {shortest} observations: open-loop windows shrunk to context {context} "
                      f"+ horizon {horizon}", stacklevel=2)
    if open_loop:
        clock = time.perf_counter()
        report["open_loop"] = wm_metrics.open_loop_errors(model, returns.episodes, context, horizon, low, high,
                                                          windows_per_episode, seed)
        features = wm_metrics.posterior_features(model, returns.episodes, context + horizon, low, high,
                                                 windows_per_episode, seed)
        report["latent"] = wm_metrics.latent_diagnostics(features)
        seconds["open_loop"] = time.perf_counter() - clock
    if sensitivity:
        clock = time.perf_counter()
        replay_env = envs.make_env(env_id, render_mode="rgb_array", **{**kwargs, "obs_mode": "proprio"})
        report["action_sensitivity"] = wm_metrics.action_sensitivity(
            model, returns.episodes, context, horizon, low, high, replay_env, seeds, windows_per_episode, seed)
        seconds["action_sensitivity"] = time.perf_counter() - clock
    if controller is not None:
        clock = time.perf_counter()
        first = returns.episodes[0]
        steps = min(planner_steps + 2, len(first["action"]) + 1)
        observations = [{key: first[f"obs/{key}"][t] for key in controller.obs_shapes} for t in range(steps)]
        # on a goal task, time the planner on the goal objective (a goal model has no reward head)
        wm_metrics.set_goal_from_info(controller, env.reset(seed=seed)[1])
        report["planner"] = wm_metrics.planner_timing(controller, observations)
        report["planner"]["goal_energy"] = dict(controller.goal_energy)
        goal = wm_metrics.goal_reaching(controller, env, goal_episodes, seed, goal_steps) if goal_episodes else None
        report["planner"].update(goal or {"success_rate": None, "goal_episodes": 0})
        report["planner"]["settings"] = controller.planner_settings  # after planning: a failed compile reads False
        seconds["planner"] = time.perf_counter() - clock
    report["seconds"] = seconds
    return report


# ------------------------------------------------------------------------------------ writers
_OPEN_LOOP_COLUMNS = {"latent_l2": "latent L2", "latent_l2_relative": "latent L2 (rel.)",
                      "proprio_mse": "proprio MSE", "proprio_nmse": "proprio nMSE", "pixel_mse": "pixel MSE",
                      "reward_mse": "reward MSE", "reward_mae": "reward MAE"}


def _table_horizons(horizon: int) -> list[int]:
    """Rows shown in markdown: 1, 2, 3, 5, then multiples of 5, and the last."""
    return sorted({h for h in (1, 2, 3, 5, *range(10, horizon + 1, 5), horizon) if h <= horizon})


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _planner_text(acted_by: dict[str, Any] | None) -> str:
    if not acted_by or acted_by["kind"] != "mpc":  # reports written before acted_by existed have none
        return ""
    if "actions" in acted_by:
        return f"; {acted_by['actions']} actions: a goal planner has no goal here"
    settings = ", ".join(f"{key} {value}" for key, value in acted_by["settings"].items())
    return f"; {acted_by['planner']}" + (f": {settings}" if settings else "")


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: a summary table, then error and sensitivity vs horizon."""
    lines = [f"# {report['experiment']} on {report['env']}", "",
             f"checkpoint `{report['checkpoint']}` ({report['model_kind']}, obs {report['obs_mode']}, trained on "
             f"{report['trained_env']}), {report['env_steps']:,} env steps, {report['updates']:,} updates", ""]
    seeds = report["episode_seeds"]
    rows = [["return", f"{report['return_mean']:.1f} ± {report['return_std']:.1f} ({report['episodes']} episodes, "
             f"seeds {seeds[0]}–{seeds[-1]}{_planner_text(report.get('acted_by'))})"]]
    if report["latent"]:
        lat = report["latent"]
        rows += [["effective rank (RankMe)", f"{lat['effective_rank']:.1f} of {lat['feature_dim']} dims"],
                 ["embedding std mean / min", f"{lat['std_mean']:.3g} / {lat['std_min']:.3g}"],
                 ["collapsed", "yes" if lat["collapsed"] else "no"]]
    sens = report["action_sensitivity"]
    if sens:
        for key, value in sens["model_mean"].items():
            real = sens.get("real_mean", {}).get(key)
            text = f"model {value:.3g}"
            if real is not None:
                text += f", real {real:.3g}, ratio {sens['ratio'][key]:.2f}"
            rows.append([f"action sensitivity ({key})", text])
    if report["planner"]:
        plan = report["planner"]
        text = f"{plan['ms_per_action']:.1f} ms per action"
        if plan["success_rate"] is not None:
            text += (f", success {plan['success_rate']:.2f} over {plan['goal_episodes']} episodes, goal distance "
                     f"{plan['start_distance_mean']:.3f} → {plan['final_distance_mean']:.3f} m")
        rows.append([f"planner {plan['planner']}", text])
    lines += _table(["metric", "value"], rows)
    if report["open_loop"]:
        ol = report["open_loop"]
        columns = [key for key in _OPEN_LOOP_COLUMNS if key in ol]
        rows = [[str(h), *(f"{ol[key][h - 1]:.4g}" for key in columns)] for h in _table_horizons(len(ol["horizons"]))]
        floor = ol["reconstruction"]
        rows.append(["filtered", *(f"{floor[key]:.4g}" if key in floor else "-" for key in columns)])
        lines += ["", f"## Open-loop error vs horizon (context {ol['context']}, {ol['windows']} windows; "
                  "filtered: the posterior on the real future, the floor)", "",
                  *_table(["h", *(_OPEN_LOOP_COLUMNS[key] for key in columns)], rows)]
    if sens:
        columns = [(f"model {key}", sens["model"][key]) for key in sens["model"]]
        columns += [(f"real {key}", values) for key, values in sens.get("real", {}).items()]
        rows = [[str(h), *(f"{values[h - 1]:.4g}" for _, values in columns)]
                for h in _table_horizons(len(sens["horizons"]))]
        lines += ["", f"## Action sensitivity vs horizon ({sens['perturbation']}, {sens['windows']} windows)", "",
                  *_table(["h", *(name for name, _ in columns)], rows)]
    return "\n".join(lines) + "\n"


def plot_report(report: dict[str, Any], stem: str | os.PathLike) -> list[Path]:
    """PNGs ``<stem>_open_loop.png`` (one panel per error) and ``<stem>_sensitivity.png`` (model vs real)."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend to pick

    written = []
    if report["open_loop"]:
        ol = report["open_loop"]
        keys = [key for key in ("latent_l2_relative", "proprio_nmse", "pixel_mse", "reward_mae") if key in ol]
        figure = Figure(figsize=(3.2 * len(keys), 3.0))
        axes = figure.subplots(1, len(keys), squeeze=False)
        for axis, key in zip(axes[0], keys):
            axis.plot(ol["horizons"], ol[key], marker=".")
            if key in ol["reconstruction"]:
                axis.axhline(ol["reconstruction"][key], linestyle=":", color="grey", label="filtered (floor)")
                axis.legend(fontsize=7)
            axis.set(xlabel="horizon (steps)", title=_OPEN_LOOP_COLUMNS[key], ylim=(0, None))
        figure.suptitle(f"open-loop error: {report['experiment']} on {report['env']}", fontsize=9)
        written.append(_save(figure, f"{stem}_open_loop.png"))
    sens = report["action_sensitivity"]
    if sens:
        figure = Figure(figsize=(4.8, 3.2))
        axis = figure.subplots()
        for source in ("model", "real"):
            for key, values in sens.get(source, {}).items():
                style = "-" if source == "model" else "--"
                axis.plot(sens["horizons"], values, linestyle=style, label=f"{source} {key}")
        axis.set(xlabel="horizon (steps)", ylabel="normalised change", title="action sensitivity", ylim=(0, None))
        axis.legend(fontsize=8)
        written.append(_save(figure, f"{stem}_sensitivity.png"))
    return written


def _save(figure: Any, path: str) -> Path:
    figure.tight_layout()
    return write_atomic(path, lambda handle: figure.savefig(handle, dpi=110, format="png"))


def write_report(report: dict[str, Any], out: str | os.PathLike) -> list[Path]:
    """Write ``out`` (JSON, atomically), ``out`` with ``.md`` and the PNGs; return their paths. A plot an earlier
    report of that name had and this one has not (e.g. ``open_loop=false``) is removed, so none describes another."""
    written = write_json_and_markdown(report_json_path(out), report, markdown(report))
    plots = plot_report(report, written[0].with_suffix(""))
    for kind in ("open_loop", "sensitivity"):
        stale = written[0].with_name(f"{written[0].stem}_{kind}.png")
        if stale not in plots:
            stale.unlink(missing_ok=True)
    return [*written, *plots]
