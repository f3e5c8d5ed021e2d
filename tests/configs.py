"""Shared test helpers: test-sized training configurations composed from the real Hydra configs (``tiny_config``,
the default RSSM run; ``preset_config``, a named preset shrunk to test size), ``untrained_goal_reacher``,
``run_script`` and ``script_module``."""

import importlib.util
import subprocess
import sys
from os import PathLike
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
SHORT_RUN = ["max_episode_steps=20", "prefill=80", "eval_episodes=1", "video=false", "log_every=20",
             "checkpoint_every=40", "device=cpu", "torch_threads=1"]
SMALL_RSSM = ["model=xs", "+model.overrides.deter=32", "+model.overrides.units=32", "batch_size=2", "seq_len=8",
              "train_ratio=16"]
SMALL_JEPA = ["model=xs", "+model.overrides.latent=16", "+model.overrides.units=32", "+model.overrides.enc_units=32"]
TINY = [*SMALL_RSSM, "behavior.units=32", *SHORT_RUN]
RUN = [*SHORT_RUN, "eval_every=1000"]
PRESETS = {
    "tdmpc_cpu": [*SMALL_JEPA, "batch_size=8", "train_ratio=16", "behavior.settings.samples=32",
                  "behavior.settings.iterations=2", "behavior.settings.elites=8", "pretrain_updates=4"],
    "planet": [*SMALL_RSSM, "behavior.settings.horizon=4", "behavior.settings.iterations=2",
               "behavior.settings.candidates=32", "behavior.settings.elites=4"],
    "jepa_goal": [*SMALL_JEPA, "+model.overrides.cnn_depth=4", "batch_size=4", "seq_len=4", "train_ratio=16",
                  "prefill=40"],
}
PRESETS["jepa_goal_frame"] = PRESETS["jepa_goal"]
PRESETS["world_models"] = ["model=xs", "+model.overrides.hidden=16", "+model.overrides.cnn_depth=4",
                           "+model.overrides.units=16", "model.overrides.vae_batch=8", "behavior.population=4",
                           "behavior.rollouts=2", "behavior.horizon=5", "behavior.every=1", "batch_size=2", "seq_len=8",
                           "train_ratio=16"]


def composed(overrides: list[str], config: str = "train") -> dict:
    """``configs/<config>.yaml`` (the training config by default) with ``overrides``, resolved to a plain dict."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def tiny_config(*overrides: str) -> dict:
    """The default (RSSM) run at test size (``TINY``), plus ``overrides``."""
    return composed([*TINY, *overrides])


def preset_config(experiment: str, *overrides: str) -> dict:
    """A preset shrunk to test size (``PRESETS``), plus ``overrides``."""
    return composed([f"experiment={experiment}", *RUN, *PRESETS[experiment], *overrides])


def run_script(*args: str | PathLike, cwd: str | PathLike | None = None) -> str:
    """``python3 *args`` in a fresh interpreter; its stdout, or a failed assertion showing its stderr."""
    result = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def untrained_goal_reacher(*overrides: str) -> tuple:
    """The goal-image reacher (pixels + proprio) and an untrained ``jepa_goal`` payload for it (+ ``overrides``)."""
    import gymnasium as gym
    import torch

    import wm_robotics.envs  # noqa: F401  (registers the goal envs)
    from wm_robotics.builders import untrained_payload

    env = gym.make("wm_robotics/reacher-easy-goal-v1", obs_mode="pixels+proprio")
    torch.manual_seed(0)
    return env, untrained_payload(preset_config("jepa_goal", *overrides), env)


def script_module(name: str):
    """``scripts/<name>.py`` imported as a module (its helpers are not part of the package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script
