"""Resuming a run: counters, replay and episode files picked up where its checkpoint left them (a killed run's
later files set aside), and scripts/train.py's resume: which config wins, Hydra's folders, refused overrides."""

import csv
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.configs import ROOT, TINY, composed, script_module, tiny_config
from wm_robotics.checkpoint import load_checkpoint
from wm_robotics.data.episodes import list_episodes, load_episode
from wm_robotics.train import Trainer


def test_resume_continues_counters_and_keeps_episodes(tmp_path):
    Trainer(tiny_config("steps=160", "eval_every=1000"), tmp_path).run()
    first = load_checkpoint(tmp_path)["counters"]
    episodes_before = {p.name for p in (tmp_path / "episodes").glob("*.npz")}
    Trainer(tiny_config("steps=280", "eval_every=1000", "resume=true"), tmp_path).run()
    second = load_checkpoint(tmp_path)["counters"]
    assert first["env_steps"] == 160 and second["env_steps"] == 280
    assert second["updates"] > first["updates"] and second["episodes"] == 7
    assert episodes_before < {p.name for p in (tmp_path / "episodes").glob("*.npz")}


def test_a_resumed_run_samples_its_replay_on_from_where_the_checkpoint_left_it(tmp_path):
    trainer = Trainer(tiny_config("steps=160", "eval_every=1000"), tmp_path)
    trainer.run()  # its last checkpoint comes after its last update
    expected = [trainer.replay.sample() for _ in range(3)]
    resumed = Trainer(tiny_config("steps=160", "eval_every=1000", "resume=true"), tmp_path)
    resumed.restore()
    for batch in expected:
        again = resumed.replay.sample()
        assert all(np.array_equal(again[key], value) for key, value in batch.items())
    fresh = Trainer(tiny_config("steps=160", "eval_every=1000"), tmp_path / "fresh")
    fresh.replay.load(tmp_path / "episodes")  # the same episodes, the sampler from its seed: other batches
    assert not np.array_equal(fresh.replay.sample()["action"], expected[0]["action"])


def test_a_run_resumed_with_a_new_learning_rate_trains_at_it(tmp_path):
    Trainer(tiny_config("steps=120", "eval_every=1000"), tmp_path).run()
    resumed = Trainer(tiny_config("steps=160", "eval_every=1000", "resume=true", "model.lr=1e-5"), tmp_path)
    resumed.restore()
    assert resumed.model_opt.param_groups[0]["lr"] == 1e-5 and resumed.counters["updates"] > 0
    assert all(int(state["step"]) == resumed.counters["updates"] for state in resumed.model_opt.state.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_run_on_cuda_resumes(tmp_path):
    Trainer(tiny_config("steps=120", "eval_every=1000", "device=cuda"), tmp_path).run()
    resumed = Trainer(tiny_config("steps=160", "eval_every=1000", "device=cuda", "resume=true"), tmp_path)
    resumed.run()  # the checkpoint's RNG states reach torch and numpy from the CPU
    assert resumed.counters["env_steps"] == 160 and next(resumed.model.parameters()).is_cuda


def test_resume_before_the_first_checkpoint_starts_over_and_sets_the_episodes_on_disk_aside(tmp_path):
    Trainer(tiny_config("steps=80", "eval_every=1000"), tmp_path).run()
    (tmp_path / "checkpoints" / "latest.pt").unlink()  # killed before its first checkpoint
    again = Trainer(tiny_config("steps=80", "eval_every=1000", "resume=true"), tmp_path)
    again.run()
    assert again.replay.num_episodes == 80 // 40  # its own: the counters start at 0, so the prefill comes again
    assert len(list_episodes(tmp_path / "episodes" / "superseded" / "resume-1")) == 2
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len([row for row in rows if row["eval_return"]]) == 1  # the first attempt's rows are gone


def test_resume_true_before_the_first_checkpoint_takes_the_commands_config_not_the_saved_one(tmp_path):
    command = [sys.executable, str(ROOT / "scripts/train.py"), *TINY, "steps=40", "eval_every=1000",
               f"hydra.run.dir={tmp_path}"]
    subprocess.run([*command, "model.lr=0.0007"], check=True, capture_output=True, timeout=300)
    (tmp_path / "checkpoints" / "latest.pt").unlink()  # killed before its first checkpoint
    result = subprocess.run([*command, "resume=true"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert OmegaConf.load(tmp_path / "config.yaml").model.lr == composed(TINY)["model"]["lr"] != 0.0007


def test_a_resume_sets_aside_the_episodes_written_after_its_checkpoint(tmp_path):
    Trainer(tiny_config("steps=40", "eval_every=1000"), tmp_path).run()
    early = (tmp_path / "checkpoints" / "latest.pt").read_bytes()  # after the first episode
    Trainer(tiny_config("steps=80", "eval_every=1000", "resume=true"), tmp_path).run()
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(early)  # as if killed before its checkpoint at 80
    Trainer(tiny_config("steps=80", "eval_every=1000", "resume=true"), tmp_path).run()
    aside = list_episodes(tmp_path / "episodes" / "superseded" / "resume-1")
    assert [path.name for path in aside] == ["episode-000001-len20.npz"]  # collected again, not kept twice
    stored = sum(len(load_episode(path)["action"]) for path in list_episodes(tmp_path / "episodes"))
    assert stored == load_checkpoint(tmp_path)["counters"]["agent_steps"] == 40


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    command = [sys.executable, str(ROOT / "scripts/train.py"), *TINY, "steps=100000", "eval_every=100000",
               f"hydra.run.dir={tmp_path}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "checkpoints" / "latest.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (checkpoint.exists() and load_checkpoint(checkpoint)["counters"]["updates"]):
        time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    payload = load_checkpoint(checkpoint)
    saved = payload["counters"]
    written = payload["replay"]["next_file"]  # episode files numbered below it came before the checkpoint
    episodes = {p.name for p in list_episodes(tmp_path / "episodes") if int(p.name[8:14]) < written}
    assert saved["env_steps"] >= 40 and episodes
    target = saved["env_steps"] + 80
    refused = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), f"resume={tmp_path}", "device=gpu"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path.parent)
    assert refused.returncode != 0 and "device must be" in refused.stderr
    assert OmegaConf.load(tmp_path / "config.yaml").device == "cpu"  # a refused override is not kept
    result = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), f"resume={tmp_path}", f"steps={target}"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed {tmp_path} at env step {saved['env_steps']:,}" in result.stdout
    resumed = load_checkpoint(checkpoint)["counters"]
    assert resumed["env_steps"] == target and resumed["updates"] >= saved["updates"]
    assert episodes <= {p.name for p in list_episodes(tmp_path / "episodes")}  # those written before the checkpoint


def test_hydra_style_resume_keeps_the_runs_saved_config(tmp_path):
    train = [sys.executable, str(ROOT / "scripts/train.py"), *TINY, "eval_every=1000", f"hydra.run.dir={tmp_path}",
             "log_every=${checkpoint_every}"]
    first = subprocess.run([*train, "steps=80", "model.lr=7e-4"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    fresh = subprocess.run([*train, "steps=80"], capture_output=True, text=True, timeout=300)  # no resume=true
    assert fresh.returncode != 0 and "already holds a run (config.yaml): resume=true continues it" in fresh.stderr
    assert "Traceback" not in fresh.stderr and OmegaConf.load(tmp_path / "config.yaml").model.lr == 7e-4
    # hydra.run.dir is not recorded; an interpolation is recorded as typed
    first_overrides = [*TINY, "eval_every=1000", "log_every=${checkpoint_every}", "steps=80", "model.lr=7e-4"]
    recorded = OmegaConf.to_container(OmegaConf.load(tmp_path / "config.yaml").command_overrides, resolve=False)
    assert recorded == first_overrides and load_checkpoint(tmp_path)["config"]["command_overrides"] == first_overrides
    # a resume whose override does not fit the checkpoint stops before config.yaml or anything else is written
    (tmp_path / "checkpoints" / ".latest.pt-killed.tmp").write_bytes(b"half a checkpoint")  # a killed write's
    (tmp_path / "videos").mkdir(exist_ok=True)
    (tmp_path / "videos" / ".eval_00000080.mp4-killed.tmp").write_bytes(b"half a video")
    refused = subprocess.run([*train, "steps=120", "resume=true", "behavior.units=64"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0 and "does not fit this run's config" in refused.stderr
    assert OmegaConf.load(tmp_path / "config.yaml").behavior.units != 64
    # the command again without the run's lr and with another task: neither may change the run
    again = subprocess.run([*train, "steps=120", "resume=true", "env=cartpole_balance", "~model.grad_clip",
                            "model.overrides={deter:32,units:32}"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    [ignoring] = [line for line in again.stdout.splitlines() if line.startswith("resume: ignoring")]
    assert "env=cartpole_balance" in ignoring and "~model.grad_clip" in ignoring and "resumed" in again.stdout
    saved = OmegaConf.load(tmp_path / "config.yaml")
    assert saved.model.lr == 7e-4 and saved.env.id == "cartpole-swingup-v0" and saved.steps == 120
    recorded = load_checkpoint(tmp_path)["config"]["command_overrides"]  # the first command's, then the resume's
    again_applied = [*(line for line in TINY if line != "model=xs"), "eval_every=1000", "log_every=${checkpoint_every}",
                     "steps=120", "model.overrides={deter:32,units:32}"]
    assert recorded == first_overrides + again_applied  # not the ignored env=, ~model.grad_clip, model=xs
    assert load_checkpoint(tmp_path)["counters"]["env_steps"] == 120
    for folder in ("checkpoints", "videos"):  # the killed writes' temp files removed on resume
        assert not list((tmp_path / folder).glob(".*.tmp")), folder
    first_hydra = (tmp_path / ".hydra" / "overrides.yaml").read_text()  # the first command's record is kept
    assert "- model.lr=7e-4" in first_hydra and "resume" not in first_hydra
    assert len(list((tmp_path / ".hydra").glob("resume_*/overrides.yaml"))) >= 1


def test_resume_names_the_run_folder_and_keeps_a_users_hydra_output_subdir(tmp_path):
    script = script_module("train")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    argv = script.resume_folder_as_run_dir([f"resume={tmp_path}/run", "steps=10"])
    assert argv[:3] == [f"resume={tmp_path}/run", "steps=10", f"hydra.run.dir={tmp_path}/run"]
    assert argv[3].startswith("hydra.output_subdir=.hydra/resume_") and len(argv) == 4
    assert script.resume_folder_as_run_dir(["resume=runs/x", "hydra.output_subdir=null"]) == [
        "resume=runs/x", "hydra.output_subdir=null"]
    for flag in ("resume=False", "resume=TRUE", "resume=true", "resume=null"):  # as Hydra reads them: no folder
        assert script.resume_folder_as_run_dir([flag]) == [flag]
    (tmp_path / ".hydra").mkdir()
    refused = script.resume_folder_as_run_dir(["resume=False", f"hydra.run.dir={tmp_path}"])
    assert refused[2].startswith("hydra.output_subdir=.hydra/refused_")
    result = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), f"resume={tmp_path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and f"no config.yaml in {tmp_path} (not a run folder)" in result.stderr
    result = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), f"resume={tmp_path}/tpyo"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and f"no config.yaml in {tmp_path}/tpyo (not a run folder)" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "tpyo").exists()  # no stray folder for a typo


@pytest.mark.parametrize("change, shown", [
    ("env.action_repeat=4", "env.action_repeat 2 -> 4"),
    ("env.id=cartpole-balance-v0", "env.id 'cartpole-swingup-v0' -> 'cartpole-balance-v0'"),
    ("obs_mode=pixels+proprio", "obs_mode 'proprio' -> 'pixels+proprio'; obs_shapes {'proprio': [5]} -> {"),
])
def test_a_resume_that_would_change_the_data_its_replay_holds_is_refused_before_it_writes(tmp_path, change, shown):
    Trainer(tiny_config("steps=120", "eval_every=1000"), tmp_path).run()
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file() and path.name != ".lock"}
    resumed = Trainer(tiny_config("steps=240", "eval_every=1000", "resume=true", change), tmp_path)
    with pytest.raises(ValueError, match=re.escape(shown) + ".*: a resumed run keeps the task, observations, "
                                                            "action repeat and offline or online training"):
        resumed.start()
    assert {path: path.stat().st_mtime_ns for path in before} == before  # checkpoint, config, metrics, episodes


def test_a_resume_without_latest_pt_starts_over_and_keeps_the_earlier_attempts_best_pt(tmp_path, capsys):
    Trainer(tiny_config("steps=160", "eval_every=80"), tmp_path).run()
    best = (tmp_path / "checkpoints" / "best.pt").read_bytes()
    (tmp_path / "checkpoints" / "latest.pt").unlink()  # killed between an evaluation and the next checkpoint
    Trainer(tiny_config("steps=80", "eval_every=80", "resume=true"), tmp_path).run()
    kept = list((tmp_path / "checkpoints").glob("best_superseded_*.pt"))
    assert len(kept) == 1 and kept[0].read_bytes() == best
    assert f"the earlier attempt's best.pt moved to {kept[0]}" in capsys.readouterr().out
    assert (tmp_path / "checkpoints" / "best.pt").read_bytes() != best  # the new attempt's own
