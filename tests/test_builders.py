"""Builders: every setting of a preset's behaviour config reaches the behaviour (all but ``kind`` and the deployment's
``goal_energy``), with the action bounds in order and the model or its feature sizes as the kind needs; the model's
size and overrides reach the model; unknown kinds list the valid ones; what a checkpoint records of an env; denormals
flushed."""

from __future__ import annotations

import re
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.configs import composed, tiny_config
from wm_robotics import builders
from wm_robotics.builders import (
    build_behavior,
    build_world_model,
    check_resumable,
    flush_denormals,
    resolve_device,
    set_torch_threads,
    space_info,
)
from wm_robotics.train import Trainer


class Recorder:
    """Stands in for a behaviour class: records the arguments it is built with."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


@pytest.mark.parametrize("experiment, kind", [("dreamer_cpu", "actor_critic"), ("world_models", "cmaes"),
                                              ("tdmpc_cpu", "mpc"), ("jepa_goal_frame", "mpc")])
def test_every_behaviour_setting_of_a_preset_reaches_the_behaviour(monkeypatch, experiment, kind):
    monkeypatch.setitem(builders.BEHAVIORS, kind, "tests.test_builders:Recorder")
    cfg = composed([f"experiment={experiment}"])["behavior"]
    assert cfg["kind"] == kind
    model = SimpleNamespace(feature_dim=7, action_dim=2)
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([1.0, 3.0], np.float32))
    built = build_behavior(cfg, model, space)
    expected = {key: value for key, value in cfg.items() if key not in ("kind", "goal_energy")}
    assert built.kwargs == expected and len(expected) >= 10  # each setting, none dropped or renamed
    head, (low, high) = built.args[:-2], built.args[-2:]
    assert head == ((model,) if kind == "mpc" else (7, 2))  # MPC plans in the model; the others act on its features
    assert low.tolist() == [-2.0, 0.0] and high.tolist() == [1.0, 3.0]


def test_the_model_is_built_at_its_size_with_the_overrides_on_top():
    model = build_world_model({"kind": "jepa", "size": "xs", "overrides": {"latent": 16, "units": 32}},
                              {"proprio": (5,)}, 3)
    assert type(model).__name__ == "JEPAWorldModel" and model.action_dim == 3
    assert model.config["latent"] == 16 and model.config["units"] == 32
    xs = type(model).SIZES["xs"]
    assert all(model.config[key] == value for key, value in xs.items() if key not in ("latent", "units"))


def test_an_unknown_kind_is_refused_with_the_valid_kinds_sorted():
    with pytest.raises(ValueError, match=r"unknown model kind 'dreamer'; valid kinds: \['jepa', 'rssm', 'vmc'\]$"):
        build_world_model({"kind": "dreamer", "size": "xs"}, {"proprio": (5,)}, 1)
    with pytest.raises(ValueError, match=r"behavior kind None; valid kinds: \['actor_critic', 'cmaes', 'mpc'\]"):
        build_behavior({"units": 32}, SimpleNamespace(feature_dim=7, action_dim=2), gym.spaces.Box(-1, 1, (2,)))


def test_a_model_setting_outside_overrides_is_refused_before_the_run_starts(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model settings \['deter'\].*model.overrides.deter="):
        Trainer(tiny_config("+model.deter=64"), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("setting, message", [
    ("+behavior.unit=32", r"unknown behavior settings \['unit'\] for kind 'actor_critic'; valid ones: \['units', "),
    ("+behavior.goal_energy.drift_corection=0.5", r"unknown behavior.goal_energy keys \['drift_corection'\]")])
def test_a_misspelt_behaviour_setting_is_refused_before_the_run_trains(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_config(setting), tmp_path)


@pytest.mark.usefixtures("one_torch_thread")  # restores the threads
def test_torch_threads_are_set_when_given_and_refused_below_one_before_the_run_starts(tmp_path):
    set_torch_threads(None)
    assert torch.get_num_threads() == 1
    set_torch_threads(2)
    assert torch.get_num_threads() == 2
    for threads in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=f"--threads must be a positive integer or null .*got {threads}"):
            set_torch_threads(threads, "--threads")
    with pytest.raises(ValueError, match="torch_threads must be a positive integer or null for torch's default, got 0"):
        Trainer(tiny_config("torch_threads=0"), tmp_path)
    assert torch.get_num_threads() == 2 and not any(tmp_path.iterdir())


class FieldsEnv(gym.Env):
    """An env with named proprio fields (as ``wm_robotics.envs``' envs have) and asymmetric action bounds."""

    observation_space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
                                         "proprio": gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)})
    action_space = gym.spaces.Box(np.array([-2.0, 0.5], np.float32), np.array([1.0, 4.0], np.float32))
    proprio_keys = {"position": slice(0, 1), "velocity": slice(1, 4), "touch": slice(4, 6)}
    render_kwargs = {"height": 8, "width": 8, "camera_id": 1}


def test_space_info_records_shapes_bounds_the_proprio_fields_sizes_in_order_and_how_frames_render():
    assert space_info(FieldsEnv()) == {
        "obs_shapes": {"pixels": [8, 8, 3], "proprio": [6]}, "action_low": [-2.0, 0.5], "action_high": [1.0, 4.0],
        "proprio_keys": [["position", 1], ["velocity", 3], ["touch", 2]],
        "render_kwargs": {"height": 8, "width": 8, "camera_id": 1}}


def test_space_info_records_no_render_keywords_without_pixels():
    class ProprioEnv(FieldsEnv):
        observation_space = gym.spaces.Dict({"proprio": gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)})

    assert "render_kwargs" not in space_info(ProprioEnv())


def test_flush_denormals_makes_subnormal_results_zero():
    if not torch.set_flush_denormal(False):  # off, to see the call turn it on
        pytest.skip("this CPU cannot flush denormals (no SSE3)")
    tiny = torch.tensor([1e-30])
    assert (tiny * 1e-10).item() > 0.0  # 1e-40 is subnormal in float32
    flush_denormals()  # what every Trainer sets: the mode stays on for the process
    assert (tiny * 1e-10).item() == 0.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_auto_device_is_the_cpu_without_cuda_and_a_numbered_cuda_device_is_refused():
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(ValueError, match="device='cuda:1' but CUDA is not available"):
        resolve_device("cuda:1")


def test_check_resumable_names_each_change_and_skips_what_an_older_checkpoint_did_not_record():
    cfg = {"env": {"id": "cartpole-swingup-v0", "action_repeat": 2}, "obs_mode": "pixels+proprio"}
    info = space_info(FieldsEnv())
    check_resumable({"config": cfg, **info}, cfg, info)
    older = {key: value for key, value in info.items() if key != "render_kwargs"}
    check_resumable({"config": cfg, **older}, cfg, info)  # saved before checkpoints recorded how frames render
    moved = {**info, "action_high": [1.0, 5.0], "render_kwargs": {"height": 8, "width": 8, "camera_id": 0}}
    other_task = {**cfg, "env": {"id": "cartpole-balance-v0", "action_repeat": 2}}
    with pytest.raises(ValueError, match=re.escape(
            "other data (env.id 'cartpole-swingup-v0' -> 'cartpole-balance-v0'; render_kwargs {'height': 8, "
            "'width': 8, 'camera_id': 1} -> {'height': 8, 'width': 8, 'camera_id': 0}; action_high [1.0, 4.0] -> "
            "[1.0, 5.0])")):
        check_resumable({"config": cfg, **info}, other_task, moved)
    offline = {**cfg, "offline": {"data": "/data/reacher", "updates": 10}}  # its clock counts updates, not env steps
    with pytest.raises(ValueError, match=r"other data \(training 'online' -> 'offline'\)"):
        check_resumable({"config": {**cfg, "offline": {"data": None}}, **info}, offline, info)
    with pytest.raises(ValueError, match=r"other data \(training 'offline' -> 'online'\)"):
        check_resumable({"config": offline, **info}, cfg, info)
    check_resumable({"config": offline, **info}, {**offline, "offline": {"data": "/moved/reacher"}}, info)
