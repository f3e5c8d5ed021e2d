"""The training loop every preset shares: collect → update → imagine → evaluate → checkpoint.

Counters: ``env_steps`` counts control steps (agent steps × action repeat, as the envs report them in
``info["control_steps"]``: an episode's last agent step repeats only up to the suite's 1000), the unit of published DMC
results; ``train_ratio`` is replayed steps per *agent* step (DreamerV3's convention), so ``updates ≈ train_ratio ·
agent_steps / (batch_size · seq_len)``.

Offline mode (``offline.data=<folder of episode files>``, e.g. written by ``scripts/collect.py``) never steps the
simulator for data: it trains ``offline.updates`` gradient steps on those episodes, and its clock (metrics ``step``,
evaluation and checkpoint periods) is the update count.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm, trange

import wm_robotics.envs as envs
from wm_robotics.agent import Agent
from wm_robotics.builders import (
    build_behavior,
    build_world_model,
    check_model_settings,
    check_resumable,
    check_schedule,
    flush_denormals,
    obs_shapes,
    resolve_device,
    set_torch_threads,
    space_info,
)
from wm_robotics.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from wm_robotics.compiled import CompiledCall
from wm_robotics.control import MPCController
from wm_robotics.data.episodes import EpisodeRecorder
from wm_robotics.data.offline import load_offline
from wm_robotics.data.replay import SequenceReplay, to_torch
from wm_robotics.evaluation import evaluate_returns
from wm_robotics.logger import MetricsLogger
from wm_robotics.models.nets import adam, load_optimizer_state, parameter_groups
from wm_robotics.precision import check_precision, compute_precision
from wm_robotics.run_lock import RunLock
from wm_robotics.video import annotate, real_time_fps, upscale, write_video
from wm_robotics.wm_metrics import goal_reaching, latent_health


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the last good checkpoint is left untouched."""


class Trainer:
    """Owns the envs, model, behaviour, replay, logger and counters of one run folder."""

    def __init__(self, cfg: dict[str, Any], run_dir: str | Path) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device = resolve_device(cfg["device"])
        #: the updates' compute precision; runs saved before it existed train in fp32
        self.precision = check_precision(cfg.get("precision", "fp32"))
        check_model_settings(cfg["model"])
        set_torch_threads(cfg.get("torch_threads"))
        flush_denormals()
        random.seed(cfg["seed"])
        np.random.seed(cfg["seed"])
        torch.manual_seed(cfg["seed"])
        kwargs = envs.env_kwargs(cfg)
        self.action_repeat = kwargs["action_repeat"]
        self.offline = (cfg.get("offline") or {}).get("data")
        check_schedule(cfg, self.offline)
        self.envs = None if self.offline else envs.make_vector_env(
            cfg["env"]["id"], cfg["num_envs"], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **kwargs)
        self.eval_env = envs.make_env(cfg["env"]["id"], render_mode="rgb_array", **kwargs)
        # episodes end at the shorter of Gymnasium's max_episode_steps and the env's own time limit
        limits = [limit for limit in (self.eval_env.spec.max_episode_steps if self.eval_env.spec else None,
                                      getattr(self.eval_env.unwrapped, "time_limit", None)) if limit is not None]
        if not self.offline and limits and cfg["seq_len"] > min(limits) + 1:
            raise ValueError(f"seq_len={cfg['seq_len']} is longer than any episode of this run can be "
                             f"({min(limits)} agent steps: {min(limits) + 1} observations): it could never train")
        space, action_space = self.eval_env.observation_space, self.eval_env.action_space
        self.model = build_world_model(cfg["model"], obs_shapes(space), action_space.shape[0]).to(self.device)
        self.behavior = build_behavior(cfg["behavior"], self.model, action_space).to(self.device)
        self.agent = Agent(self.model, self.behavior, self.device, obs_shapes(space))
        lr = cfg["model"]["lr"]
        self.model_opt = adam(parameter_groups(self.model, lr, cfg["model"].get("encoder_lr_scale", 1.0)), lr,
                              cfg["model"]["eps"])
        #: the world model's loss, forward and backward compiled; None without ``compile`` (and in runs saved before it)
        self.compiled_loss = CompiledCall(self.model.loss, "the world model's loss", "training without compiling "
                                          "from now on") if cfg.get("compile") else None
        self.replay = SequenceReplay(self.run_dir / "episodes", cfg["replay_capacity"], cfg["seq_len"],
                                     cfg["batch_size"], cfg["seed"])
        self.counters = {"env_steps": 0, "agent_steps": 0, "updates": 0, "episodes": 0, "last_eval": -1, "burst": 0,
                         "best_eval": None}
        self._last: dict[str, float] = {}  # clock of the last log / checkpoint; time and counters at the last log row
        self.checkpoint_path = self.run_dir / "checkpoints" / "latest.pt"
        self.best_path = self.run_dir / "checkpoints" / "best.pt"
        self.space_info = space_info(self.eval_env)
        self._started = False
        self._lock = RunLock(self.run_dir)  # last but the logger: the first file this run writes
        self.logger = MetricsLogger(self.run_dir)

    # ----------------------------------------------------------------- checkpoints
    def payload(self) -> dict[str, Any]:
        """Everything a checkpoint holds (what ``MPCController`` and ``agent_from_checkpoint`` read)."""
        return {"config": self.cfg, **self.space_info, "counters": dict(self.counters), "rng": rng_state(),
                "replay": self.replay.state_dict(), "model": self.model.state_dict(),
                "model_opt": self.model_opt.state_dict(), "behavior": self.behavior.full_state_dict()}

    def save(self) -> Path:
        """Write ``checkpoints/latest.pt`` atomically (the previous one stays until the rename)."""
        return save_checkpoint(self.checkpoint_path, self.payload())

    def save_if_best(self, results: dict[str, float]) -> bool:
        """Write ``checkpoints/best.pt`` when an evaluation's score (``goal/success_rate`` where the run measures it,
        else ``eval_return``) beats every earlier evaluation's (ties keep the earlier); True when it did."""
        score = results.get("goal/success_rate", results["eval_return"])
        best = self.counters["best_eval"]
        if not math.isfinite(score) or (best is not None and score <= best):
            return False
        self.counters["best_eval"] = score
        save_checkpoint(self.best_path, self.payload())
        return True

    def restore(self) -> None:
        """Continue from ``checkpoints/latest.pt`` and reload the episode files written before it."""
        # on the CPU: RNG and CMA-ES states must stay there; weights and optimiser states move to their
        # device as they load
        payload = load_checkpoint(self.checkpoint_path, map_location="cpu")
        check_resumable(payload, self.cfg, self.space_info)
        try:
            self.model.load_state_dict(payload["model"])
            load_optimizer_state(self.model_opt, payload["model_opt"])
            self.behavior.load_full_state_dict(payload["behavior"])
        except RuntimeError as error:  # e.g. an override that changes a network's size
            raise ValueError(f"{self.checkpoint_path} does not fit this run's config (a resumed run cannot change "
                             f"the size of its networks): {error}") from error
        self.counters.update(payload["counters"])
        set_rng_state(payload["rng"])
        replay_state = payload.get("replay", {})  # checkpoints before session 23: the sampler starts from the seed
        steps = self._reload(replay_state.get("next_file"))  # before session 60: every episode file
        if replay_state:
            self.replay.load_state_dict(replay_state)
        print(f"resumed {self.run_dir} at env step {self.counters['env_steps']:,} "
              f"({self.counters['updates']:,} updates), replay {steps:,} steps in {self.replay.num_episodes} episodes")

    def _reload(self, next_file: int | None = None) -> int:
        """Refill the replay from the run's episode files (offline: from ``offline.data``) and forget
        metric rows past the clock; returns the replay steps loaded. Online, the files numbered ``next_file`` and
        above were written after the checkpoint, whose counters collect their steps again: they are set aside."""
        aside = None if self.offline or next_file is None else self.replay.set_aside_from(next_file)
        if aside is not None:
            print(f"resume: episode files written after the checkpoint moved to {aside} (their steps are collected "
                  "again)")
        steps = self._load_offline() if self.offline else self.replay.load()
        self.logger.drop_after(self.clock)
        return steps

    @property
    def clock(self) -> int:
        """The run's time axis: env steps online, gradient updates offline."""
        return self.counters["updates" if self.offline else "env_steps"]

    # ----------------------------------------------------------------- learning
    def update(self) -> dict[str, float]:
        """One world-model step and one behaviour step on a replay batch, in the run's ``precision``
        (forward and backward passes under autocast for ``bf16``; weights and optimisers float32), the
        world model's loss compiled with ``compile``."""
        batch = to_torch(self.replay.sample(), self.device)
        batch["action"] = self.behavior.from_env(batch["action"])
        if self.model.frames_per_update:
            frames = to_torch(self.replay.sample_steps(self.model.frames_per_update), self.device)
            batch.update({f"frames/{key}": value for key, value in frames.items()})
        with compute_precision(self.device, self.precision):
            loss, metrics, posterior = (self.compiled_loss or self.model.loss)(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"world-model loss is {loss.item()} at update {self.counters['updates']} "
                f"(env step {self.counters['env_steps']}); metrics {metrics}; {self._last_good()}: lower "
                f"model.lr or check the data.")
        self.model_opt.zero_grad(set_to_none=True)
        loss.backward()
        metrics["model/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                                           self.cfg["model"]["grad_clip"]))
        if not math.isfinite(metrics["model/grad_norm"]):  # a finite loss can still have inf/NaN gradients
            raise NonFiniteLossError(
                f"world-model gradient norm is {metrics['model/grad_norm']} at update {self.counters['updates']} "
                f"(env step {self.counters['env_steps']}); the weights were not stepped and {self._last_good()}: lower "
                f"model.lr or check the data.")
        self.model_opt.step()
        self.model.after_step()
        with compute_precision(self.device, self.precision):
            behavior_metrics = self.behavior.update(self.model, posterior)
        bad = [name for name, value in behavior_metrics.items() if not math.isfinite(value)]
        if bad:
            raise NonFiniteLossError(f"behaviour metrics {bad} are not finite at update {self.counters['updates']}; "
                                     f"{self._last_good()}")
        self.counters["updates"] += 1
        return {**metrics, **behavior_metrics}

    def _last_good(self) -> str:
        """What a run stopped by a non-finite loss resumes from, for its message."""
        return (f"the last good checkpoint {self.checkpoint_path} is unchanged" if self.checkpoint_path.exists() else
                f"no checkpoint was written yet ({self.checkpoint_path}; resume=true would start the run over)")

    def updates_owed(self) -> int:
        """Updates due by the train ratio, counted from the end of the prefill, where ``pretrain_updates``
        are due at once (TD-MPC2's burst) instead of the ratio's first one."""
        cfg = self.cfg
        prefill_agent = cfg["prefill"] // self.action_repeat
        if self.counters["agent_steps"] < prefill_agent or not self.replay.can_sample:
            return 0
        if not self.counters["updates"]:  # fixed when learning starts: a later config change owes no late burst
            self.counters["burst"] = max(0, (cfg.get("pretrain_updates") or 0) - 1)
        target = (cfg["train_ratio"] * (self.counters["agent_steps"] - prefill_agent)
                  / (cfg["batch_size"] * cfg["seq_len"]))
        return max(0, self.counters["burst"] + int(target) + 1 - self.counters["updates"])

    # ----------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float]:
        """Deterministic-policy episodes on the simulator; an MP4 of the first when enabled."""
        cfg, step = self.cfg, self.clock
        planner = getattr(self.behavior, "planner", None)  # an agent and warm start of its own: collection goes on
        with contextlib.nullcontext() if planner is None else planner.warm_start_kept():
            report = evaluate_returns(Agent(self.model, self.behavior, self.device), self.eval_env,
                                      cfg["eval_episodes"], seed=10_000 + step, record_first=cfg["video"])
        if report.frames:
            unit = "updates" if self.offline else "env steps"
            frames = [annotate(upscale(f, 256), [f"{cfg['env']['id']} @ {step:,} {unit}", f"t={t}"])
                      for t, f in enumerate(report.frames)]
            path = self.run_dir / "videos" / f"eval_{step:08d}.mp4"
            write_video(path, frames, real_time_fps(self.eval_env.metadata, path))
        self.counters["last_eval"] = step
        latent = {}
        if self.replay.can_sample:  # collapse diagnostics (RankMe, per-dim std) on a replay batch
            batch = to_torch(self.replay.sample(), self.device)
            latent = latent_health(self.model, {**batch, "action": self.behavior.from_env(batch["action"])})
        return {"eval_return": report.mean, "eval_return_std": report.std, **latent, **self._evaluate_goals(step)}

    def _evaluate_goals(self, step: int) -> dict[str, float]:
        """Goal-objective behaviours on goal tasks: plan toward ``eval_episodes`` goals for ``eval_goal_steps``
        agent steps each (``MPCController`` on the current weights); {} otherwise."""
        cfg = self.cfg
        if cfg["behavior"].get("objective") != "goal" or not cfg.get("eval_goal_steps"):
            return {}
        controller = MPCController(self.payload(), str(self.device), cfg["behavior"]["planner"])
        result = goal_reaching(controller, self.eval_env, cfg["eval_episodes"], 20_000 + step,
                               cfg["eval_goal_steps"], progress=False)
        if result is None:
            return {}
        return {"goal/success_rate": result["success_rate"], "goal/final_distance": result["final_distance_mean"]}

    # ----------------------------------------------------------------- the loop
    def _collect_step(self, obs: dict[str, np.ndarray], is_first: np.ndarray, recorders: list[EpisodeRecorder],
                      bar: tqdm) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One step of every env (random during prefill); finished episodes go to the replay."""
        num_envs = len(recorders)
        if self.counters["env_steps"] < self.cfg["prefill"]:
            actions = np.stack([self.envs.single_action_space.sample() for _ in range(num_envs)])
        else:
            actions = self.agent.act(obs, is_first, sample=True)
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        done = terminated | truncated
        control_steps = int(envs.control_steps_taken(info, done).sum())
        self.counters["agent_steps"] += num_envs
        self.counters["env_steps"] += control_steps
        bar.update(control_steps)
        for i in range(num_envs):
            final = info["final_obs"][i] if done[i] else {k: v[i] for k, v in obs.items()}
            recorders[i].add(actions[i], final, reward[i], terminated[i], truncated[i])
            if done[i]:
                episode_return = self._store_episode(recorders[i].episode())
                self.logger.log(self.counters["env_steps"], {"episode_return": episode_return,
                                                             "episode_length": len(recorders[i])})
                bar.set_postfix(ret=f"{episode_return:.1f}", upd=self.counters["updates"])
                recorders[i] = EpisodeRecorder({k: v[i] for k, v in obs.items()})
        return obs, done

    def _store_episode(self, episode: dict[str, np.ndarray]) -> float:
        """Add an episode to the replay (and its file) and count it; returns its return."""
        self.replay.add_episode(episode)
        self.counters["episodes"] += 1
        return float(episode["reward"].sum())

    def _load_offline(self) -> int:
        """Fill the replay from ``offline.data``; a clear error when it is empty or does not fit this run."""
        return load_offline(self.replay, self.offline, self.space_info,
                            f"{self.cfg['env']['id']}, obs_mode={self.cfg['obs_mode']}")

    def _periodic(self, total: int, metrics: dict[str, float], bar: tqdm, boundary: bool) -> None:
        """Log, evaluate and checkpoint when their periods (in the run's clock) have passed."""
        periods, step, last = (self.cfg["offline"] if self.offline else self.cfg), self.clock, self._last
        if step - last["log"] >= periods["log_every"] and metrics:
            now = time.time()
            elapsed = max(now - last["time"], 1e-9)
            speed = {"updates_per_s": (self.counters["updates"] - last["updates"]) / elapsed,
                     "updates": self.counters["updates"]}
            if not self.offline:
                speed["fps"] = (self.counters["env_steps"] - last["env_steps"]) / elapsed
            self.logger.log(step, {**metrics, **speed})
            last.update(log=step, time=now, updates=self.counters["updates"], env_steps=self.counters["env_steps"])
        every = periods["eval_every"]
        if step // every > max(self.counters["last_eval"], 0) // every or step >= total:
            results = self.evaluate()
            self.logger.log(step, results)
            self.save_if_best(results)
            bar.set_postfix(eval=f"{self.logger.rows[-1]['eval_return']:.1f}", upd=self.counters["updates"])
            last["checkpoint"] = -periods["checkpoint_every"]
        if last["checkpoint"] + periods["checkpoint_every"] <= step and (boundary or step >= total):
            self.logger.flush()  # first: a resume keeps the rows up to the checkpoint's step, so they must be on disk
            self.save()
            last["checkpoint"] = step

    def _train_online(self, total: int, bar: tqdm) -> None:
        """Collect with the agent (random during prefill) and update by the train ratio."""
        cfg, num_envs = self.cfg, self.cfg["num_envs"]
        obs, _ = self.envs.reset(seed=cfg["seed"] * 1000 + self.counters["episodes"])
        recorders = [EpisodeRecorder({k: v[i] for k, v in obs.items()}) for i in range(num_envs)]
        is_first = np.ones(num_envs, bool)
        self.agent.reset(num_envs)
        self.envs.single_action_space.seed(cfg["seed"] + self.counters["episodes"])
        train_metrics: dict[str, float] = {}
        while self.counters["env_steps"] < total:
            obs, done = self._collect_step(obs, is_first, recorders, bar)
            is_first = done
            owed = self.updates_owed()
            for _ in trange(owed, desc="updates", leave=False, disable=owed < 100):  # a bar for a pretraining burst
                train_metrics = self.update()
            if self.counters["env_steps"] >= total:  # the run stops mid-episode: keep those steps (no return logged)
                for recorder in recorders:
                    if len(recorder):
                        self._store_episode(recorder.episode(cut_short=True))
            self._periodic(total, train_metrics, bar, boundary=bool(done.any()))

    def _train_offline(self, total: int, bar: tqdm) -> None:
        """Gradient updates on the loaded episodes only; the simulator is used for evaluation."""
        while self.counters["updates"] < total:
            train_metrics = self.update()
            bar.update(1)
            self._periodic(total, train_metrics, bar, boundary=True)

    def start(self) -> None:
        """Load an offline run's data, or pick a resumed run up where it was: its checkpoint and replay restored (an
        attempt killed before its first checkpoint: its episodes set aside), killed writes' temp files removed. What
        does not fit raises here, before the run writes anything, and closes the Trainer; ``run`` calls it once."""
        if self._started:
            return
        self._started = True
        try:
            if not self.cfg["resume"]:
                if self.offline:  # loaded and checked before the run writes anything
                    self._load_offline()
                return
            for folder in (self.run_dir, self.checkpoint_path.parent, self.replay.directory, self.run_dir / "videos"):
                for temp in folder.glob(".*.tmp"):  # one run writes its folder: these are no one's
                    temp.unlink()
            if self.checkpoint_path.exists():
                self.restore()
                return
            if self.best_path.exists():  # the earlier attempt's best evaluation: the new attempt's would overwrite it
                kept = self.best_path.with_name(f"best_superseded_{time.strftime('%Y%m%d-%H%M%S')}.pt")
                self.best_path.rename(kept)
                print(f"resume: the earlier attempt's best.pt moved to {kept}, the run starts over")
            self._reload(0)
            print(f"resume: no checkpoint at {self.checkpoint_path} yet, starting from scratch")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the logger and envs and free the run folder for another Trainer (``run`` does when it ends)."""
        self.logger.close()
        if self.envs is not None:
            self.envs.close()
        self._lock.release()

    def run(self) -> dict[str, float]:
        """Train until ``steps`` env steps (offline: ``offline.updates`` updates); returns the final evaluation."""
        cfg = self.cfg
        self.start()
        total = cfg["offline"]["updates"] if self.offline else cfg["steps"]
        bar = tqdm(total=total, initial=self.clock, unit="update" if self.offline else "step",
                   desc=cfg["experiment_name"], dynamic_ncols=True, mininterval=1.0)
        self._last = {"log": self.clock, "checkpoint": self.clock, "time": time.time(),
                      "updates": self.counters["updates"], "env_steps": self.counters["env_steps"]}
        try:
            (self._train_offline if self.offline else self._train_online)(total, bar)
        finally:
            bar.close()
            self.close()
        final = {k: v for k, v in self.logger.rows[-1].items()} if self.logger.rows else {}
        print(f"done: {self.counters['env_steps']:,} env steps, {self.counters['updates']:,} updates, "
              f"eval return {final.get('eval_return', float('nan')):.1f}, run folder {self.run_dir}")
        return final
