"""Imagination videos from a checkpoint: the simulator's episode beside the model's open-loop prediction.

Frame layout (one frame per step t = 0..T, so T+1 frames for an episode of T steps; episodes follow
each other). Panels are ``size`` × ``size``, 2-pixel white gaps (width ``n·size + 2·(n − 1)``):

- pixel decoder: ``real | imagined | |error|``. *real*: ``env.render()`` (or the saved episode's
  ``obs/pixels``) with the step and the real reward; *imagined*: the decoded state, labelled
  ``context`` on the filtered steps and ``imagined h=<steps since the last anchor>`` after, with the
  predicted reward; *|error|*: ``ERROR_GAIN``·|real − imagined| averaged over RGB, as an inferno
  heat map, with the mean absolute error in [0, 1].
- no pixel decoder (proprio-only RSSM, a JEPA without a probe decoder): ``real | error curves``,
  the curves being the latent RMS error (and the decoded-proprio error when there is one) over the
  episode with a cursor at the current step, and the text on the real panel; a console message says
  so (``NO_DECODER``). A saved episode without ``obs/pixels`` gives the curve panel alone.

The planner view (``planner_steps``) is a PNG: one row per chosen step, the real frame and then the
planner's mean plan (``last_info["plan"]``) imagined from that step's real posterior and decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import imageio.v3 as iio
import numpy as np
import torch

from wm_robotics.agent import agent_from_checkpoint, check_task
from wm_robotics.atomic import write_atomic
from wm_robotics.behaviors.planners import PLANNERS
from wm_robotics.builders import resolve_device
from wm_robotics.checkpoint import CheckpointError
from wm_robotics.imagination import (
    Imagination,
    check_imagination,
    decoded_frames,
    imagine_episode,
    record_episode,
)
from wm_robotics.video import (
    ERROR_GAIN,
    CurvePanel,
    annotate,
    check_panel_size,
    error_map,
    side_by_side,
    stack_rows,
    upscale,
    video_path,
    write_video,
)

REQUIRED_KEYS = ("config", "obs_shapes", "action_low", "action_high", "model", "behavior")
NO_DECODER = ("{model} has no pixel decoder (decode() gives no 'pixels'; a JEPA needs a trained probe decoder): "
              "exporting {shown} instead of real | imagined | |error|")


def imagination_frames(result: Imagination, real: Sequence[np.ndarray] | None, size: int = 256,
                       title: str = "") -> list[np.ndarray]:
    """Annotated frames of one episode (see the module docstring for the layout); ``real`` (T+1, H, W, 3)."""
    head = [title] if title else []
    curves = None
    if result.pixels is None or real is None:
        errors = {"latent RMS": result.latent_error}
        if result.proprio_error is not None:
            errors["proprio MAE"] = result.proprio_error
        curves = CurvePanel(errors, size, "prediction error", marks=result.anchors)
    frames = []
    for t, h in enumerate(result.horizon.tolist()):
        where = "context" if h == 0 else f"imagined h={h}"
        pred = None if result.pred_reward is None else f"{result.pred_reward[t]:.2f}"
        if curves is None:
            imagined = result.pixels[t]
            target = upscale(real[t], imagined.shape[0])
            mae = np.abs(target.astype(np.float32) - imagined).mean() / 255
            panels = [annotate(upscale(real[t], size), [*head, f"real  step {t}", f"reward {result.reward[t]:.2f}"]),
                      annotate(upscale(imagined, size), [where, f"pred reward {pred}" if pred else "no reward head"]),
                      annotate(upscale(error_map(target, imagined), size),
                               [f"|error| x{ERROR_GAIN:g}", f"MAE {mae:.3f}"])]
        elif real is None:
            panels = [annotate(curves.frame(t), [*head, f"step {t}"])]
        else:
            lines = [*head, f"step {t}", f"reward {result.reward[t]:.2f}" + (f" (pred {pred})" if pred else ""), where]
            panels = [annotate(upscale(real[t], size), lines), curves.frame(t)]
        frames.append(side_by_side(panels))
    return frames


def _planner_kwargs(planner: str, horizon: int) -> dict[str, int]:
    """Small search settings: a strip is for looking at, not for control quality."""
    if planner == "cem":
        return dict(horizon=horizon, iterations=4, candidates=128, elites=16)
    return dict(horizon=horizon, iterations=4, samples=128, elites=16, policy_samples=8)


def _check_planner(planner: str) -> None:
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner {planner!r} for the planner view; valid planners: {sorted(PLANNERS)}")


@torch.inference_mode()
def planner_strip(payload: dict, device: torch.device, result: Imagination, real: Sequence[np.ndarray],
                  steps: Sequence[int], planner: str = "mppi", horizon: int = 10, size: int = 128) -> np.ndarray | None:
    """Rows ``real frame at s | decoded mean plan h=1..H`` for each step s; None when no step is in the episode."""
    from wm_robotics.control import MPCController

    _check_planner(planner)
    controller = MPCController(payload, device=str(device), planner=planner, **_planner_kwargs(planner, horizon))
    model, rows = controller.model, []
    for step in steps:
        if not 0 <= step < len(real):
            print(f"planner view: step {step} is outside the episode (0..{len(real) - 1}), skipped")
            continue
        controller.planner.reset()
        state = {key: value[step:step + 1] for key, value in result.posterior.items()}  # (1, ...)
        controller.planner.plan(model, state)
        plan = controller.planner.last_info["plan"]  # (1, H, A) elite mean
        imagined, _ = model.imagine(state, horizon, actions=plan)  # (1, H, ...)
        pixels = decoded_frames(model.decode(imagined)["pixels"][0])  # (H, 64, 64, 3)
        reward = model.predict_reward(model.features(imagined))
        panels = [annotate(upscale(real[step], size), [f"real step {step}", f"{planner} plan ->"])]
        for h, frame in enumerate(pixels):
            lines = [f"h={h + 1}"] + ([] if reward is None else [f"r {float(reward[0, h]):.2f}"])
            panels.append(annotate(upscale(frame, size), lines))
        rows.append(side_by_side(panels))
    return stack_rows(rows) if rows else None


def export_imagination_video(
    payload: dict, out: str | Path, *, task: str | None = None, source: Sequence[dict] | None = None,
    episodes: int = 2, seed: int = 0, context: int = 5, horizon: int | None = 50, size: int = 256, fps: int = 25,
    max_episode_steps: int | None = None, device: str = "auto", checkpoint: str = "the checkpoint",
    planner_steps: Sequence[int] = (), planner: str = "mppi", planner_horizon: int = 10,
) -> list[Path]:
    """Write the imagination video of ``payload`` (a loaded checkpoint) to ``out`` (.mp4 / .gif).

    Episodes are run live on ``task`` (an env id; default the checkpoint's own) with the
    deterministic policy, or taken from ``source`` (episode-file dicts). With ``planner_steps``
    a planner strip of the first episode goes to ``<out stem>_planner.png``. Returns the paths written.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes}")
    if source is not None and (task is not None or max_episode_steps is not None):
        raise ValueError("task and max_episode_steps set the live episodes; with source= the episodes come from "
                         "the files: leave them out")
    video_path(out, fps)  # every setting is checked before an episode is played
    check_panel_size(size)
    check_imagination(context, horizon)
    if planner_steps:
        _check_planner(planner)
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{checkpoint} has no {missing}: it is not a training checkpoint of an agent")
    torch.manual_seed(seed)
    device = resolve_device(device)
    agent = agent_from_checkpoint(payload, device)
    model, run_cfg = agent.model, payload["config"]
    if planner_steps and model.predict_reward(torch.zeros(1, 1, model.feature_dim, device=device)) is None:
        raise ValueError(f"the planner view plans on predicted reward and {checkpoint}'s model has no reward head "
                         "(a goal model: evaluate.py's goal episodes show how it plans toward goals)")
    if source is None:
        import wm_robotics.envs as envs

        task = task or run_cfg["env"]["id"]
        kwargs = envs.env_kwargs(run_cfg)
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        env = envs.make_env(task, render_mode="rgb_array", **kwargs)
        check_task(payload, env, task, checkpoint)
        runs = [record_episode(agent, env, seed + index) for index in range(episodes)]
        env.close()
    else:
        for index, episode in enumerate(source):
            for key, shape in payload["obs_shapes"].items():
                found = episode.get(f"obs/{key}")
                if found is not None and tuple(found.shape[1:]) != tuple(shape):
                    raise ValueError(f"{checkpoint} was trained on {run_cfg['env']['id']} with {key} of shape "
                                     f"{tuple(shape)}, but episode {index} has {tuple(found.shape[1:])}")
        runs = [(episode, episode.get("obs/pixels")) for episode in list(source)[:episodes]]
    frames, results = [], []
    for index, (episode, real) in enumerate(runs):
        result = imagine_episode(model, episode, agent.behavior.from_env, context, horizon)
        if index == 0 and result.pixels is None:
            shown = "real frames | latent prediction error" if real is not None else \
                "the latent prediction error alone (the episode has no obs/pixels)"
            print(NO_DECODER.format(model=type(model).__name__, shown=shown))
        frames += imagination_frames(result, real, size, f"episode {index}")
        results.append(result)
        imagined = result.horizon > 0
        error = float(result.latent_error[imagined].mean()) if imagined.any() else 0.0
        print(f"episode {index}: {len(episode['action'])} steps, return {episode['reward'].sum():.1f}, "
              f"mean latent RMS error of the imagined steps {error:.3f}")
    paths = [write_video(out, frames, fps)]
    strip_path = Path(out).with_name(f"{Path(out).stem}_planner.png")
    if planner_steps:
        real = runs[0][1]
        if results[0].pixels is None or real is None:
            print("planner view skipped: it needs a pixel decoder and real frames")
        else:
            strip = planner_strip(payload, device, results[0], real, planner_steps, planner, planner_horizon, size)
            if strip is not None:
                paths.append(write_atomic(strip_path, lambda handle: iio.imwrite(handle, strip, extension=".png")))
    if strip_path not in paths:  # an earlier video's strip beside this one would show another run's plans
        strip_path.unlink(missing_ok=True)
    return paths
