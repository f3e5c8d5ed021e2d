"""Build world models and behaviours by name from a config (one registry each), and the payload a checkpoint
records of them and their env."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import gymnasium as gym
import torch

from wm_robotics.checks import positive_int
from wm_robotics.models.base import WorldModel


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` (or a ``torch.device``) as given."""
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device=auto or device=cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def set_torch_threads(threads: int | None, name: str = "torch_threads") -> None:
    """Set torch's CPU threads (None: torch's default); ``name``: the setting, for the message."""
    if threads is not None:
        torch.set_num_threads(positive_int(name, threads, " or null for torch's default"))


def flush_denormals() -> None:
    """Make CPU float math flush subnormal numbers to zero (x86 FTZ/DAZ) in this thread and in the intra-op
    threads torch starts after the call (call it before the first multi-threaded op: running threads keep
    their mode). Subnormal activations (below ~1e-38) otherwise take a slow microcode path, which made
    ``tdmpc_cpu`` updates ~1.45x slower by 35k env steps. CUDA math is unaffected."""
    torch.set_flush_denormal(True)


def obs_shapes(space: gym.spaces.Dict) -> dict[str, tuple[int, ...]]:
    """``{"pixels": (H, W, 3), "proprio": (D,)}`` for the keys an env observation has."""
    return {key: tuple(sub.shape) for key, sub in space.spaces.items()}


# kind → "module:Class", imported when built (a model's or behaviour's imports are paid only by who uses it)
MODELS = {"rssm": "wm_robotics.models.rssm:RSSMWorldModel", "vmc": "wm_robotics.models.vmc:VMCWorldModel",
          "jepa": "wm_robotics.models.jepa:JEPAWorldModel"}
BEHAVIORS = {"actor_critic": "wm_robotics.behaviors.actor_critic:ActorCritic",
             "cmaes": "wm_robotics.behaviors.cmaes_controller:CMAESController",
             "mpc": "wm_robotics.behaviors.mpc_behavior:MPCBehavior"}


def _class(registry: dict[str, str], kind: Any, what: str) -> type:
    """The class ``registry`` names for ``kind``, or a ``ValueError`` listing the valid kinds."""
    if kind not in registry:
        raise ValueError(f"unknown {what} kind {kind!r}; valid kinds: {sorted(registry)}")
    module, _, name = registry[kind].partition(":")
    return getattr(importlib.import_module(module), name)


#: the keys of a run's ``model`` config; the model's own settings (deter, units, ...) go under ``overrides``
MODEL_SETTINGS = ("kind", "size", "overrides", "lr", "eps", "grad_clip", "encoder_lr_scale")


def check_model_settings(model_cfg: dict[str, Any]) -> None:
    """ValueError naming the keys of ``model_cfg`` nothing reads (``model.deter`` for ``model.overrides.deter``)."""
    unknown = sorted(set(model_cfg) - set(MODEL_SETTINGS))
    if unknown:
        raise ValueError(f"unknown model settings {unknown}; valid ones: {list(MODEL_SETTINGS)}. The model's own "
                         f"settings go under model.overrides (e.g. model.overrides.{unknown[0]}=...)")


def check_schedule(cfg: dict[str, Any], offline: bool) -> None:
    """ValueError for a schedule a run cannot keep: log, eval and checkpoint periods (``offline.`` ones in an
    ``offline`` run) that are not positive integers, or an online run's train ratio that is not positive."""
    periods = cfg["offline"] if offline else cfg
    wrong = {key: periods[key] for key in ("log_every", "eval_every", "checkpoint_every")
             if not isinstance(periods[key], int) or periods[key] <= 0}
    if wrong:
        raise ValueError(f"{'offline.' if offline else ''}log_every, eval_every and checkpoint_every must be "
                         f"positive integers, got {wrong}")
    if not offline and not cfg["train_ratio"] > 0:
        raise ValueError(f"train_ratio must be positive (replayed steps per agent step), got {cfg['train_ratio']}; "
                         "scripts/collect.py collects episodes without training")


def build_world_model(model_cfg: dict[str, Any], shapes: dict[str, tuple], action_dim: int) -> WorldModel:
    """The world model named by ``model_cfg["kind"]`` (valid kinds: keys of ``MODELS``)."""
    model_class = _class(MODELS, model_cfg.get("kind"), "model")
    return model_class.from_size(model_cfg["size"], shapes, action_dim, **model_cfg.get("overrides", {}))


def _check_behavior_settings(behavior_class: type, kind: str, params: dict[str, Any], goal_energy: dict) -> None:
    """ValueError naming a behaviour setting or a ``goal_energy`` key (read at deployment) that nothing reads: a typo
    is refused before the run trains, not when it ends."""
    from wm_robotics.behaviors.planning import GOAL_ENERGY_KEYS

    given_by_the_builder = ("model", "feature_dim", "action_dim", "action_low", "action_high")
    parameters = inspect.signature(behavior_class).parameters
    valid = [name for name in parameters if name not in given_by_the_builder]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [] if takes_any else sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown behavior settings {unknown} for kind {kind!r}; valid ones: "
                         f"{valid + ['goal_energy']}")
    unknown = sorted(set(goal_energy) - GOAL_ENERGY_KEYS)
    if unknown:
        raise ValueError(f"unknown behavior.goal_energy keys {unknown}; valid keys: {sorted(GOAL_ENERGY_KEYS)}")


def build_behavior(behavior_cfg: dict[str, Any], model: WorldModel, action_space: gym.spaces.Box) -> torch.nn.Module:
    """The behaviour named by ``behavior_cfg["kind"]`` (valid kinds: keys of ``BEHAVIORS``)."""
    kind = behavior_cfg.get("kind")
    behavior_class = _class(BEHAVIORS, kind, "behavior")
    # goal_energy is read at deployment (MPCController.set_goal), not by the training behaviour
    params = {key: value for key, value in behavior_cfg.items() if key not in ("kind", "goal_energy")}
    _check_behavior_settings(behavior_class, kind, params, behavior_cfg.get("goal_energy") or {})
    bounds = (action_space.low, action_space.high)
    if kind == "mpc":  # plans inside the model itself; the others act on its features
        return behavior_class(model, *bounds, **params)
    return behavior_class(model.feature_dim, model.action_dim, *bounds, **params)


def space_info(env: gym.Env) -> dict[str, Any]:
    """What a checkpoint records of ``env`` (a ``wm_robotics.envs`` env): observation shapes, action
    bounds, the proprio fields' names and sizes in their flattened order and, with pixels, how its frames are
    rendered (``Physics.render`` keywords)."""
    proprio_keys = env.unwrapped.proprio_keys
    shapes = obs_shapes(env.observation_space)
    render = {"render_kwargs": env.unwrapped.render_kwargs} if "pixels" in shapes else {}
    return {"obs_shapes": {k: list(v) for k, v in shapes.items()}, **render,
            "action_low": env.action_space.low.tolist(), "action_high": env.action_space.high.tolist(),
            "proprio_keys": [[name, part.stop - part.start] for name, part in proprio_keys.items()]}


def check_resumable(saved: dict[str, Any], cfg: dict[str, Any], info: dict[str, Any]) -> None:
    """ValueError when resuming checkpoint payload ``saved`` with run config ``cfg`` on an env of ``space_info``
    ``info`` would change the data its replay holds: the task, observation mode, action repeat, observation shapes,
    proprio fields, action bounds, how frames render (keys a checkpoint does not record are not compared), or whether
    it trains offline (``offline.data``; the clock its metrics and periods count in)."""
    was = saved["config"]
    def mode(config: dict[str, Any]) -> str:
        return "offline" if (config.get("offline") or {}).get("data") else "online"
    changes = [f"{name} {old!r} -> {new!r}" for name, old, new in (
        ("env.id", was["env"]["id"], cfg["env"]["id"]), ("obs_mode", was.get("obs_mode"), cfg.get("obs_mode")),
        ("env.action_repeat", was["env"].get("action_repeat"), cfg["env"].get("action_repeat")),
        ("training", mode(was), mode(cfg))) if old != new]
    changes += [f"{key} {saved[key]!r} -> {now!r}" for key, now in info.items() if key in saved and saved[key] != now]
    if changes:
        raise ValueError(f"the run was trained on other data ({'; '.join(changes)}): a resumed run keeps the task, "
                         "observations, action repeat and offline or online training of its replay; start a new run "
                         "to change them")


def untrained_payload(cfg: dict[str, Any], env: gym.Env) -> dict[str, Any]:
    """A checkpoint payload of a freshly initialised model and behaviour for run config ``cfg`` and its
    ``env`` (what ``MPCController`` needs, without training: e.g. to time or test a preset's deployment)."""
    model = build_world_model(cfg["model"], obs_shapes(env.observation_space), env.action_space.shape[0])
    behavior = build_behavior(cfg["behavior"], model, env.action_space)
    return {"config": cfg, **space_info(env), "model": model.state_dict(), "behavior": behavior.full_state_dict()}
