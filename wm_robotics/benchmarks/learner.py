"""Learner speed: ms per world-model update and per actor-critic update, imagined steps/s.

Sizes XS and S, from proprio (cartpole: 5-d) and 64×64 pixels, batch 16 × 64, horizon 15, in one run. The reference is
dreamerv3-torch at its default size on this project's 2-core CPU (torch 2.13): 7.8 s per update from proprio (world
model 1.3 s, actor-critic 6.5 s), 9.4 s from pixels — measured by the project (DESIGN.md) on a CPU with AVX-512 and a
180 GFLOP/s fp32 matmul rate, not re-run here; a run on a CPU whose rate (``timing.cpu_rate``: the median of the rates
timed after each CPU row, in the rows' ``matmul_gflops``) is more than 25% away, or of another vector ISA, says so
(``timing.nearest_reference``). On the CPU (not with ``--quick``) a last row times ``dreamer_cpu``'s update with the
world model's loss compiled (``compile=true``).
"""

from __future__ import annotations

import time

import torch

from wm_robotics.behaviors.actor_critic import ActorCritic
from wm_robotics.benchmarks.timing import (
    SESSIONS_1_19_CPU,
    benchmark_devices,
    cpu_rate,
    matmul_gflops,
    nearest_reference,
    print_table,
    sync,
    timed_precisions,
)
from wm_robotics.compiled import CompiledCall
from wm_robotics.models.nets import adam
from wm_robotics.models.rssm import RSSMWorldModel
from wm_robotics.precision import compute_precision

#: dreamerv3-torch at its default size: ms per update, each with the fp32 1024³ matmul rate of the CPU it ran on
DREAMERV3_REFERENCES = (
    {**SESSIONS_1_19_CPU, "ms": {"proprio": {"world_model": 1300.0, "actor_critic": 6500.0, "total": 7800.0},
                                 "pixels": {"total": 9400.0}}},
)


def _batch(obs_key: str, batch: int, length: int, device: torch.device) -> dict[str, torch.Tensor]:
    obs = (torch.randint(0, 256, (batch, length, 64, 64, 3), dtype=torch.uint8) if obs_key == "pixels"
           else torch.randn(batch, length, 5))
    return {f"obs/{obs_key}": obs.to(device), "action": torch.rand(batch, length, 1, device=device) * 2 - 1,
            "reward": torch.rand(batch, length, device=device),
            "is_first": torch.zeros(batch, length, dtype=torch.bool, device=device),
            "is_terminal": torch.zeros(batch, length, dtype=torch.bool, device=device)}


def measure(size: str, obs_key: str, device: torch.device, repeats: int, units: int,
            imag_starts: int | None = None, batch: int = 16, length: int = 64,
            actor_grad: str = "reinforce", precision: str = "fp32", mlp: tuple[int, int] | None = None,
            compile: bool = False) -> dict:
    """Median ms per world-model update and per actor-critic update for one configuration, with the
    forward and backward passes in ``precision`` and with ``compile`` the world model's loss compiled (as
    ``Trainer.update`` runs them; ``compile_s``: the first update, which compiles); ``mlp`` = (units, layers)
    of the proprio encoder / decoder MLPs when not the size's own."""
    torch.manual_seed(0)
    shape = (64, 64, 3) if obs_key == "pixels" else (5,)
    overrides = {} if mlp is None else {"mlp_units": mlp[0], "mlp_layers": mlp[1]}
    model = RSSMWorldModel.from_size(size, {obs_key: shape}, 1, **overrides).to(device)
    behavior = ActorCritic(model.feature_dim, 1, units=units, imag_starts=imag_starts, actor_grad=actor_grad).to(device)
    optimizer = adam(model.parameters(), 1e-4)
    data = _batch(obs_key, batch, length, device)
    compute = compute_precision(device, precision)
    loss_fn = CompiledCall(model.loss, "the world model's loss", "the benchmark stops") if compile else model.loss
    wm_ms, ac_ms = [], []
    for index in range(repeats + 1):  # the first round warms up allocators and kernels
        sync(device)
        start = time.perf_counter()
        with compute:
            loss, _, posterior = loss_fn(data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        middle = time.perf_counter()
        with compute:
            behavior.update(model, posterior)
        sync(device)
        end = time.perf_counter()
        if index:
            wm_ms.append(1000 * (middle - start))
            ac_ms.append(1000 * (end - middle))
        elif compile:
            if not loss_fn.active:
                raise RuntimeError("compiling the world model's loss failed (see the warning above)")
            compile_s = middle - start
    wm, ac = sorted(wm_ms)[len(wm_ms) // 2], sorted(ac_ms)[len(ac_ms) // 2]
    starts = min(imag_starts or batch * length, batch * length)
    return {"size": size if mlp is None else f"{size}, enc/dec {mlp[0]}×{mlp[1]}", "obs": obs_key,
            "device": str(device), "units": units, "imag_starts": starts,
            "actor_grad": actor_grad, "precision": precision, "compile": compile,
            **({"compile_s": compile_s} if compile else {}),
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "world_model_ms": wm, "actor_critic_ms": ac, "total_ms": wm + ac,
            "imagined_steps_per_s": starts * behavior.horizon / (ac / 1000)}


def _timed_row(args: tuple, kwargs: dict) -> dict:
    """``measure(*args, **kwargs)``; on the CPU with the matmul rate timed right after it (for ``cpu_rate``)."""
    row, device = measure(*args, **kwargs), args[2]
    return {**row, "matmul_gflops": matmul_gflops(device)} if device.type == "cpu" else row


def run(quick: bool = False, device_choice: str = "auto") -> dict:
    """XS and S, proprio and pixels, CPU (and CUDA when present); prints a table.

    Both actor gradients are timed: ``reinforce`` (imagination without autograd) and the
    ``backprop`` default (a backward pass through the imagination); ``backprop`` also with
    ``precision=bf16`` and ``bf16_full`` (skipped on a CPU without bf16 kernels). The last rows give S
    proprio dreamerv3-torch's default encoder / decoder MLPs (1024 × 5; 16.4M parameters, its 16M): the
    reference's own size.
    """
    devices = benchmark_devices(device_choice)
    repeats = 1 if quick else 3
    configs = [("xs", "proprio", 256, None), ("xs", "proprio", 256, 256), ("s", "proprio", 512, None),
               ("xs", "pixels", 256, None), ("s", "pixels", 512, None)]
    if quick:
        configs = configs[:2]
    precisions = {device: timed_precisions(device, ["fp32", "bf16", "bf16_full"]) for device in devices}
    variants = [("reinforce", "fp32"), ("backprop", "fp32"), ("backprop", "bf16"), ("backprop", "bf16_full")]
    cases = [((size, key, device, repeats, units, starts), {"actor_grad": grad, "precision": precision})
             for device in devices for size, key, units, starts in configs for grad, precision in variants
             if precision in precisions[device]]
    if not quick:
        cases += [(("s", "proprio", device, repeats, 512), {"actor_grad": "backprop", "precision": precision,
                                                            "mlp": (1024, 5)})
                  for device in devices for precision in precisions[device]]
        # dreamer_cpu's update with compile=true: the first compiles (~9 min on 2 cores, seconds from inductor's cache)
        cases += [(("xs", "proprio", device, repeats, 256, 256), {"actor_grad": "backprop", "compile": True})
                  for device in devices if device.type == "cpu"]
    # the reference is chosen by the median of the rates timed beside the CPU rows, not by one burst
    rows = [_timed_row(args, kwargs) for args, kwargs in cases]
    reference = nearest_reference(DREAMERV3_REFERENCES, cpu_rate(rows), "dreamerv3-torch")
    for row in rows:
        row["reference_total_ms"] = reference["ms"][row["obs"]]["total"]
        row["speedup_vs_reference"] = row["reference_total_ms"] / row["total_ms"]
    print_table("Learner: ms per update (batch 16×64, horizon 15; median)",
                ["size", "obs", "device", "params (M)", "AC units", "imag. starts", "actor grad", "precision",
                 "world model ms", "actor-critic ms", "total ms", "imagined steps/s", "× faster than dreamerv3-torch"],
                [[r["size"], r["obs"], r["device"], r["params_M"], r["units"], r["imag_starts"], r["actor_grad"],
                  r["precision"] + (", compiled" if r["compile"] else ""), r["world_model_ms"],
                  r["actor_critic_ms"], r["total_ms"], r["imagined_steps_per_s"], r["speedup_vs_reference"]]
                 for r in rows])
    return {"learner": rows, "dreamerv3_reference": reference}
