"""The training loop: run folder layout, counters and schedules, the best checkpoint, NaN stop, checkpoint safety
(resuming: test_resume.py)."""

import csv
import json
import random
import subprocess
import sys
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from tests.configs import ROOT, composed, preset_config, tiny_config
from wm_robotics.builders import resolve_device
from wm_robotics.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from wm_robotics.data.episodes import list_episodes, load_episode
from wm_robotics.train import NonFiniteLossError, Trainer


def test_run_folder_layout_and_metrics(tmp_path):
    final = Trainer(tiny_config("steps=200", "eval_every=200", "video=true"), tmp_path).run()
    assert {"checkpoints", "episodes", "metrics.csv", "tensorboard", "videos"} <= {p.name for p in tmp_path.iterdir()}
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert {"step", "episode_return", "eval_return", "loss/total"} <= set(rows[0])
    assert "eval_return" in final and len(list((tmp_path / "videos").glob("*.mp4"))) == 1
    [video] = (tmp_path / "videos").glob("*.mp4")
    assert iio.immeta(video, plugin="FFMPEG")["fps"] == 50  # cartpole at action repeat 2: 50 actions per second
    payload = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert payload["counters"]["env_steps"] == 200 and payload["counters"]["updates"] > 0
    assert len(list((tmp_path / "episodes").glob("*.npz"))) == 200 // 40


def test_env_steps_count_the_control_steps_the_env_applied(tmp_path):
    cfg = tiny_config("env.action_repeat=3", "max_episode_steps=null", "steps=1000", "prefill=2000", "eval_every=5000")
    Trainer(cfg, tmp_path).run()
    counters = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["counters"]
    assert counters["agent_steps"] == 334 and counters["episodes"] == 1
    assert counters["env_steps"] == 1000  # the suite's 1000: the last agent step repeats its action once, not 3 times
    [episode] = list_episodes(tmp_path / "episodes")
    assert len(load_episode(episode)["reward"]) == 334


def test_logged_speeds_are_rates_since_the_previous_row(tmp_path, monkeypatch):
    ticks = iter(range(1000))
    monkeypatch.setattr("wm_robotics.train.time", SimpleNamespace(time=lambda: float(next(ticks) ** 2)))
    Trainer(tiny_config("steps=200"), tmp_path).run()
    rows = [row for row in csv.DictReader((tmp_path / "metrics.csv").open()) if row["fps"]]
    assert len(rows) >= 4
    for call, (before, row) in enumerate(zip([{"step": "0", "updates": "0"}, *rows], rows), start=1):
        seconds = call ** 2 - (call - 1) ** 2  # the clock's n-th reading is n², so the windows grow
        assert float(row["fps"]) == pytest.approx((int(row["step"]) - int(before["step"])) / seconds, rel=1e-5)
        assert float(row["updates_per_s"]) == pytest.approx(
            (float(row["updates"]) - float(before["updates"])) / seconds, rel=1e-5)


def test_a_trainer_makes_cpu_math_flush_subnormal_floats(tmp_path):
    torch.set_flush_denormal(False)
    subnormal = torch.full((4,), 1e-39)
    assert (subnormal * 1.0).ne(0).all()
    Trainer(tiny_config("steps=40"), tmp_path)
    assert (subnormal * 1.0).eq(0).all()


def test_encoder_lr_scale_slows_only_the_encoder(tmp_path):
    trainer = Trainer(tiny_config("steps=120", "eval_every=1000", "+model.encoder_lr_scale=0.0"), tmp_path)
    [encoder, rest] = trainer.model_opt.param_groups
    assert encoder["lr"] == 0.0 and rest["lr"] == trainer.cfg["model"]["lr"]
    assert len(encoder["params"]) + len(rest["params"]) == len(list(trainer.model.parameters()))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.run()
    moved = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    assert trainer.counters["updates"] > 0 and moved  # the rest learned ...
    assert not {name for name in moved if name.startswith("encoder.")}  # ... the encoder, at lr × 0, did not
    # scale 1: one group, as before
    assert len(Trainer(tiny_config(), tmp_path / "default").model_opt.param_groups) == 1


def test_pretrain_updates_come_at_once_when_the_prefill_ends(tmp_path):
    plain = Trainer(tiny_config("steps=80", "eval_every=1000"), tmp_path / "plain")
    burst = Trainer(tiny_config("steps=80", "eval_every=1000", "pretrain_updates=25"), tmp_path / "burst")
    for trainer in (plain, burst):
        trainer.run()  # exactly the prefill, whose last step is the first that learns
    assert (plain.counters["updates"], burst.counters["updates"]) == (1, 25)  # 25 in place of the ratio's first one
    plain.cfg["pretrain_updates"] = 1000  # too late: learning has started
    for trainer in (plain, burst):
        trainer.cfg["steps"] = 120
        trainer.run()
    assert burst.counters["updates"] - plain.counters["updates"] == 24


def test_a_run_that_stops_mid_episode_keeps_the_steps_it_counted(tmp_path):
    Trainer(tiny_config("steps=60", "eval_every=1000"), tmp_path).run()  # an episode and a half (40 env steps each)
    last = load_episode(list_episodes(tmp_path / "episodes")[-1])
    assert len(last["action"]) == 10 and last["truncated"][-1] and not last["terminated"].any()
    Trainer(tiny_config("steps=140", "eval_every=1000", "resume=true"), tmp_path).run()
    stored = sum(len(load_episode(path)["action"]) for path in list_episodes(tmp_path / "episodes"))
    assert stored == load_checkpoint(tmp_path)["counters"]["agent_steps"] == 70


def test_rng_states_survive_a_weights_only_checkpoint_mid_gaussian_pair(tmp_path):
    random.seed(0)
    np.random.seed(0)
    random.gauss(0, 1), np.random.randn(), np.random.rand(3)  # odd draws: the second normal of each pair is cached
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = random.gauss(0, 1), np.random.randn(), np.random.rand(2).tolist(), torch.rand(1).item()
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.gauss(0, 1), np.random.randn(), np.random.rand(2).tolist(), torch.rand(1).item()) == expected


def test_logging_periods_must_be_positive_and_sequences_fit_in_an_episode(tmp_path):
    with pytest.raises(ValueError, match=r"must be positive integers, got \{'eval_every': 0\}"):
        Trainer(tiny_config("eval_every=0"), tmp_path)
    for ratio in (0, -8):  # it still made one update when the prefill ended
        with pytest.raises(ValueError, match=f"train_ratio must be positive .*got {ratio}; scripts/collect.py"):
            Trainer(tiny_config(f"train_ratio={ratio}"), tmp_path)
    with pytest.raises(ValueError, match=r"seq_len=22 is longer than any episode .*\(20 agent steps: 21 obs"):
        Trainer(tiny_config("seq_len=22"), tmp_path)
    Trainer(tiny_config("seq_len=21"), tmp_path)
    with pytest.raises(ValueError, match=r"\(500 agent steps: 501 obs"):  # the suite's limit, with or without Gym's
        Trainer(tiny_config("max_episode_steps=null", "seq_len=502"), tmp_path)
    with pytest.raises(ValueError, match=r"\(500 agent steps: 501 obs"):
        Trainer(tiny_config("max_episode_steps=800", "seq_len=502"), tmp_path)


def _nan_loss(trainer):
    real_loss = trainer.model.loss
    trainer.model.loss = lambda batch: (lambda loss, *rest: (loss * float("nan"), *rest))(*real_loss(batch))


def _nan_model_gradient(trainer):  # the loss stays finite
    next(trainer.model.parameters()).register_hook(lambda grad: grad * float("nan"))


def _nan_actor_gradient(trainer):
    next(trainer.behavior.actor.parameters()).register_hook(lambda grad: grad * float("nan"))


@pytest.mark.parametrize("poison, message", [(_nan_loss, "world-model loss is nan"),
                                             (_nan_model_gradient, "world-model gradient norm is nan"),
                                             (_nan_actor_gradient, r"behaviour metrics \['actor/grad_norm'\]")])
def test_non_finite_loss_or_gradient_stops_with_message_and_checkpoint_still_loads(tmp_path, monkeypatch, poison,
                                                                                    message):
    trainer = Trainer(tiny_config("steps=400", "eval_every=1000"), tmp_path)
    real_update, calls = trainer.update, {"n": 0}

    def update():
        calls["n"] += 1
        if calls["n"] == 7:
            poison(trainer)
        return real_update()

    monkeypatch.setattr(trainer, "update", update)
    with pytest.raises(NonFiniteLossError, match=message):
        trainer.run()
    for network in (trainer.model, trainer.behavior):  # never stepped with a NaN gradient
        assert all(torch.isfinite(p).all() for p in network.parameters())
    payload = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    for name, weights in (("model", payload["model"]), ("behavior", payload["behavior"]["module"])):
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), name


def test_a_nan_policy_prior_gradient_leaves_the_prior_unstepped(tmp_path, monkeypatch):
    trainer = Trainer(preset_config("tdmpc_cpu", "steps=400"), tmp_path)  # TD-MPC2's prior lives in the world model
    real_update, calls = trainer.update, {"n": 0}

    def update():
        calls["n"] += 1
        if calls["n"] == 8:
            next(trainer.model.policy.parameters()).register_hook(lambda grad: grad * float("nan"))
        return real_update()

    monkeypatch.setattr(trainer, "update", update)
    with pytest.raises(NonFiniteLossError, match=r"behaviour metrics \['pi/grad_norm'\]"):
        trainer.run()
    weights = trainer.model.state_dict().values()
    assert all(torch.isfinite(value).all() for value in weights if value.is_floating_point())


def test_a_nan_observation_from_the_env_is_named_before_the_agent_acts_on_it(tmp_path):
    trainer = Trainer(tiny_config("steps=200", "eval_every=1000"), tmp_path)
    real_step, calls = trainer.envs.step, {"n": 0}

    def step(actions):
        calls["n"] += 1
        obs, *rest = real_step(actions)
        if calls["n"] == 60:  # after the prefill: the agent acts on it
            obs["proprio"][0, 2] = np.nan
        return (obs, *rest)

    trainer.envs.step = step
    with pytest.raises(ValueError, match=r"observation 'proprio' holds NaN or inf \(envs \[0\]\)"):
        trainer.run()


def test_a_non_finite_loss_before_the_first_checkpoint_says_there_is_none(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config("steps=400", "checkpoint_every=1000"), tmp_path)
    real_update = trainer.update
    monkeypatch.setattr(trainer, "update", lambda: _nan_loss(trainer) or real_update())
    with pytest.raises(NonFiniteLossError, match=r"at update 0 .*no checkpoint was written yet"):
        trainer.run()
    assert not (tmp_path / "checkpoints" / "latest.pt").exists()


def test_corrupted_or_foreign_checkpoint_gives_clear_error(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "broken.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a wm_robotics checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "wm_robotics.checkpoint/0"}, tmp_path / "other_version.pt")
    with pytest.raises(CheckpointError, match="not a wm_robotics checkpoint"):
        load_checkpoint(tmp_path / "other_version.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_device_cuda_without_cuda_advises_auto_or_cpu():
    with pytest.raises(ValueError, match="device='cuda' but CUDA is not available; use device=auto or device=cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("name", ["gpu", "mps"])
def test_an_unknown_device_name_is_refused_with_the_valid_ones(name):
    with pytest.raises(ValueError, match=rf"device must be 'auto', 'cpu' or 'cuda\[:N\]', got '{name}'"):
        resolve_device(name)


def test_evaluate_script_reports_json(tmp_path):
    Trainer(tiny_config("steps=120", "eval_every=1000"), tmp_path / "run").run()
    result = subprocess.run([sys.executable, str(ROOT / "scripts/evaluate.py"), f"checkpoint={tmp_path / 'run'}",
                             "episodes=2", f"out={tmp_path / 'report.json'}", "torch_threads=1", "open_loop=false",
                             "sensitivity=false", "planner=null"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["episodes"] == 2 and len(report["returns"]) == 2 and report["env_steps"] == 120


def test_unknown_precision_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; "
                                         r"valid precisions: \['bf16', 'bf16_full', 'fp32'\]"):
        Trainer(tiny_config("precision=fp16"), tmp_path)


@pytest.mark.parametrize("experiment, size, units", [("dreamer", "s", 512), ("dreamer_cpu", "xs", 256)])
def test_dreamer_presets_actor_critic_width(experiment, size, units):
    cfg = composed([f"experiment={experiment}"])
    assert (cfg["model"]["size"], cfg["behavior"]["units"],
            cfg["behavior"]["layers"]) == (size, units, 2)  # DreamerV3 S: 512 x 2


def test_unknown_model_kind_lists_valid_ones():
    from wm_robotics.builders import build_world_model

    with pytest.raises(ValueError, match=r"valid kinds: \[.*'rssm'.*'vmc'.*\]"):
        build_world_model({"kind": "transformer"}, {"proprio": (5,)}, 1)


@pytest.mark.parametrize("obs_mode", ["pixels", "pixels+proprio"])
def test_pixel_observations_train_end_to_end(tmp_path, obs_mode):
    final = Trainer(tiny_config("steps=120", "eval_every=1000", f"obs_mode={obs_mode}",
                                "+model.overrides.cnn_depth=4"), tmp_path).run()
    assert "eval_return" in final
    payload = load_checkpoint(tmp_path)
    assert payload["obs_shapes"]["pixels"] == [64, 64, 3] and payload["counters"]["updates"] > 0


class TrainerCounters:
    """The Trainer's counter and schedule logic on a stub: no env, no model."""

    updates_owed = Trainer.updates_owed
    _periodic = Trainer._periodic

    def __init__(self, keep_best=False, **cfg):
        self.cfg = {"prefill": 100, "train_ratio": 64, "batch_size": 4, "seq_len": 8, "pretrain_updates": None,
                    "log_every": 10**9, "eval_every": 100, "checkpoint_every": 10**9, **cfg}
        self.action_repeat = 2
        self.replay = SimpleNamespace(can_sample=True)
        self.counters = {"env_steps": 0, "agent_steps": 0, "updates": 0, "episodes": 0, "last_eval": -1, "burst": 0,
                         "best_eval": None}
        self.offline = None
        self.best_path, self.keep_best = "best.pt", keep_best  # keep_best: the real save_if_best
        self.evals = []
        self.logger = SimpleNamespace(log=lambda step, row: None, rows=[{"eval_return": 0.0}], flush=lambda: None)
        self._last = {"log": 0, "time": 0.0, "updates": 0, "env_steps": 0, "checkpoint": 0}

    def evaluate(self):
        self.evals.append(self.clock)
        self.counters["last_eval"] = self.clock
        return {"eval_return": 0.0}

    def save(self):
        pass

    def save_if_best(self, results):
        return Trainer.save_if_best(self, results) if self.keep_best else False

    def payload(self):
        return {"counters": dict(self.counters)}


def test_the_best_checkpoint_is_the_first_of_the_highest_scores(monkeypatch):
    saved = []
    monkeypatch.setattr("wm_robotics.train.save_checkpoint", lambda path, payload: saved.append((path, payload)))
    t = TrainerCounters(keep_best=True)
    kept = [t.save_if_best({"eval_return": value}) for value in (5.0, 5.0, float("nan"), 7.0, 6.0)]
    assert kept == [True, False, False, True, False] and t.counters["best_eval"] == 7.0
    assert [payload["counters"]["best_eval"] for _, payload in saved] == [5.0, 7.0] and saved[0][0] == "best.pt"
    goal = TrainerCounters(keep_best=True)  # a goal run is scored by its success rate, whatever its return
    kept = [goal.save_if_best({"eval_return": ret, "goal/success_rate": rate}) for ret, rate in ((9, 0.4), (1, 0.6))]
    assert kept == [True, True] and goal.counters["best_eval"] == 0.6


def test_best_checkpoint_of_a_run_holds_the_weights_of_its_best_evaluation(tmp_path, monkeypatch):
    scores, weights = iter([1.0, 3.0, 2.0, 3.0, 0.0]), []
    evaluate = Trainer.evaluate

    def scripted(trainer):  # the real evaluation, then a scripted return (the run's own are noise-sized)
        evaluate(trainer)
        weights.append({key: value.clone() for key, value in trainer.model.state_dict().items()})
        return {"eval_return": next(scores)}

    monkeypatch.setattr(Trainer, "evaluate", scripted)
    Trainer(tiny_config("steps=200", "eval_every=40"), tmp_path).run()
    payload = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert payload["counters"]["best_eval"] == 3.0 and payload["counters"]["last_eval"] == 80
    assert all(torch.equal(payload["model"][key], value) for key, value in weights[1].items())
    assert not all(torch.equal(payload["model"][key], value) for key, value in weights[3].items())
    assert load_checkpoint(tmp_path)["counters"]["best_eval"] == 3.0


def test_updates_owed_by_hand():
    t = TrainerCounters()  # prefill 100 env steps = 50 agent steps (repeat 2); 64 / (4·8) = 2 updates per agent step
    t.counters["agent_steps"] = 49
    assert t.updates_owed() == 0
    t.counters["agent_steps"] = 50
    assert t.updates_owed() == 1  # the ratio's first update as soon as the prefill ends
    t.counters["updates"] = 1
    t.counters["agent_steps"] = 53
    assert t.updates_owed() == 2 * 3 + 1 - 1
    t.replay.can_sample = False
    assert t.updates_owed() == 0
    burst = TrainerCounters(pretrain_updates=10)
    burst.counters["agent_steps"] = 50
    assert burst.updates_owed() == 10  # the burst replaces the ratio's first update
    burst.counters["updates"] = 10
    burst.counters["agent_steps"] = 52
    assert burst.updates_owed() == 4


def test_eval_when_a_period_is_crossed_and_at_the_end():
    t = TrainerCounters()
    bar = SimpleNamespace(set_postfix=lambda **k: None)
    for step in (40, 80, 100, 140, 180, 220, 250):
        t.clock = step
        t._periodic(250, {}, bar, boundary=False)
    assert t.evals == [100, 220, 250]  # 100 and 220 cross 100 and 200; 250 is the end
