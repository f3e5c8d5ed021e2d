"""Environment throughput: our env vs raw dm_control vs Shimmy, proprio and pixels, vector scaling.

All rates are *control* (physics) steps per second, so action repeat is comparable: an agent
step with ``action_repeat=2`` counts as 2.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

import wm_robotics.envs as envs
from wm_robotics.benchmarks.timing import interleaved_rates, print_table
from wm_robotics.envs.rendering import FAST_RENDER_FLAGS

BLOCK = 50  # steps per timed call


def _raw(domain: str, task: str, pixels: bool, fast: bool = False):
    from dm_control import suite

    env = suite.load(domain, task, task_kwargs={"random": 0})
    spec = env.action_spec()
    actions = np.random.default_rng(0).uniform(spec.minimum, spec.maximum, (BLOCK, *spec.shape))
    camera = envs.dmc.DEFAULT_CAMERA.get(domain, 0)
    flags = FAST_RENDER_FLAGS if fast else None
    env.reset()

    def work() -> int:
        for action in actions:
            step = env.step(action)
            if pixels:
                env.physics.render(64, 64, camera_id=camera, render_flag_overrides=flags)
            if step.last():
                env.reset()
        return BLOCK

    return work


def _ours(name: str, obs_mode: str, action_repeat: int, fast: bool = False):
    env = envs.make_env(name, obs_mode=obs_mode, action_repeat=action_repeat, render_fast=fast)
    actions = [env.action_space.sample() for _ in range(BLOCK)]
    env.reset(seed=0)

    def work() -> int:
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return BLOCK * action_repeat

    return work


def _shimmy(domain: str, task: str, pixels: bool):
    try:
        from dm_control import suite
        from shimmy.dm_control_compatibility import DmControlCompatibilityV0
    except ImportError:
        return None
    env = DmControlCompatibilityV0(
        suite.load(domain, task, task_kwargs={"random": 0}),
        render_mode="rgb_array" if pixels else None,
        render_kwargs={"width": 64, "height": 64, "camera_id": envs.dmc.DEFAULT_CAMERA.get(domain, 0)},
    )
    actions = [env.action_space.sample() for _ in range(BLOCK)]
    env.reset(seed=0)

    def work() -> int:
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if pixels:
                env.render()
            if terminated or truncated:
                env.reset()
        return BLOCK

    return work


def single_env(tasks: Sequence[tuple[str, str]] = (("cartpole", "swingup"), ("walker", "walk")), rounds: int = 5,
               seconds: float = 0.4) -> list[dict]:
    """Control steps/s of each implementation, proprio and 64×64 pixels, per task."""
    results = []
    for domain, task in tasks:
        name = envs.env_id(domain, task)
        for pixels in (False, True):
            mode = "pixels" if pixels else "proprio"
            cases = {
                "raw dm_control": _raw(domain, task, pixels),
                "ours, repeat 1": _ours(name, mode, 1),
                "ours, repeat 2": _ours(name, mode, 2),
            }
            shimmy = _shimmy(domain, task, pixels)
            if shimmy is not None:
                cases["shimmy"] = shimmy
            if pixels:
                cases["raw, fast render"] = _raw(domain, task, True, fast=True)
                cases["ours, repeat 1, render_fast"] = _ours(name, mode, 1, fast=True)
            measured = interleaved_rates(cases, rounds, seconds)
            reference = measured["raw dm_control"]
            for impl, steps_per_s in measured.items():
                results.append({"task": f"{domain}-{task}", "obs": mode, "impl": impl,
                                "steps_per_s": steps_per_s, "vs_raw": steps_per_s / reference})
    return results


def vector_scaling(name: str = "cartpole-swingup-v0", obs_mode: str = "pixels", counts: Sequence[int] = (1, 2, 4),
                   agent_steps: int = 300) -> list[dict]:
    """Agent steps/s of ``make_vector_env`` with ``counts`` processes (all AsyncVectorEnv; speedups against 1),
    beside one plain in-process env (whose llvmpipe renders on every core)."""
    if 1 not in counts:
        raise ValueError(f"counts must include 1, the speedup's reference, got {list(counts)}")
    plain = envs.make_env(name, obs_mode=obs_mode)
    plain.reset(seed=0)
    action = plain.action_space.sample()
    start = time.perf_counter()
    for _ in range(agent_steps):
        _, _, terminated, truncated, _ = plain.step(action)
        if terminated or truncated:
            plain.reset()
    results = [{"task": name, "obs": obs_mode, "processes": "plain env (no vector)",
                "agent_steps_per_s": agent_steps / (time.perf_counter() - start)}]
    for count in counts:
        vec = envs.make_vector_env(name, count, asynchronous=True, obs_mode=obs_mode)
        vec.reset(seed=0)
        actions = np.stack([vec.single_action_space.sample() for _ in range(count)])
        for _ in range(10):
            vec.step(actions)
        start = time.perf_counter()
        for _ in range(agent_steps):
            vec.step(actions)
        elapsed = time.perf_counter() - start
        vec.close()
        results.append({"task": name, "obs": obs_mode, "processes": count,
                        "agent_steps_per_s": count * agent_steps / elapsed})
    base = next(row["agent_steps_per_s"] for row in results if row["processes"] == 1)
    for row in results:
        row["speedup_vs_1"] = row["agent_steps_per_s"] / base
    return results


def run(quick: bool = False) -> dict:
    """Run both measurements, print tables, return the JSON-ready results."""
    rounds, seconds = (2, 0.2) if quick else (5, 0.4)
    single = single_env(rounds=rounds, seconds=seconds)
    print_table("Env throughput (control steps/s, median of interleaved rounds)",
                ["task", "obs", "implementation", "steps/s", "× raw"],
                [[r["task"], r["obs"], r["impl"], r["steps_per_s"], r["vs_raw"]] for r in single])
    vector = []
    for obs_mode in ("pixels", "proprio"):
        vector += vector_scaling(obs_mode=obs_mode, agent_steps=100 if quick else 300)
    print_table("Vector env scaling (AsyncVectorEnv, agent steps/s)",
                ["task", "obs", "processes", "agent steps/s", "× 1 process"],
                [[r["task"], r["obs"], r["processes"], r["agent_steps_per_s"], r["speedup_vs_1"]] for r in vector])
    return {"envs": single, "vector": vector}
