"""Planner and TD-MPC2 update speed: ms per MPPI / CEM action and ms per ``tdmpc`` update, ~1M and ~5M JEPA.

Default planner settings (MPPI: TD-MPC2's horizon 3, 6 iterations, 512 + 24 prior samples; CEM:
PlaNet's horizon 12, 10 iterations, 1000 candidates) on a cartpole-sized model (5-d proprio, 1
action), one environment, objective = rewards + terminal Q(z, π(z)) (2 of the Q heads). The update
is the ``tdmpc`` preset's (batch 256, horizon 3): world-model step, target EMA and policy-prior step.

FLOPs per call are counted with torch's ``FlopCounterMode``. The reference measured in the same run
is the machine's fp32 matmul rate now (a 1024³ matmul): ``matmul_bound_ms`` = FLOPs / that rate is
what a purely matmul-bound implementation would take, so the ratio survives a busy machine.
The ``goal-cem`` row is the ``jepa_goal`` preset's act as deployed (``MPCController`` built from
``configs/experiment/jepa_goal.yaml``): encode a reacher frame + proprio, then CEM on the preset's
goal energy (for a ``split_dynamics`` model, in the proprio block alone). On CUDA the planners replay their search
as a CUDA graph; the ``mppi (no graph)`` row times the same search launched kernel by kernel. The
``mppi (bf16)`` row runs the same search with ``precision="bf16"`` (matmuls in bfloat16); its
matmul-bound time still uses the fp32 rate, so its "% of bound" can pass 100.
TD-MPC2's own code on this project's 2-core CPU (torch 2.13, compile off; DESIGN.md, measured by
the project, not re-run here): 1M 154 ms/action and 115–126 ms/update, 5M 438 and 435–452.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

import wm_robotics.envs as envs
from wm_robotics.behaviors.mpc_behavior import MPCBehavior
from wm_robotics.behaviors.planning import SamplingPlanner
from wm_robotics.benchmarks.timing import benchmark_devices, print_table, sync
from wm_robotics.control import MPCController
from wm_robotics.models.jepa import JEPAWorldModel
from wm_robotics.models.nets import adam
from wm_robotics.precision import compute_precision
from wm_robotics.train import env_kwargs, untrained_payload

REFERENCE_MS = {"xs": {"mppi": 154.0, "update": 120.5}, "s": {"mppi": 438.0, "update": 443.5}}
BATCH, HORIZON = 256, 3
#: Hydra's config tree of this (editable) checkout: the goal-cem row times the jepa_goal preset as configured
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _timed(work: Callable[[], object], device: torch.device, repeats: int,
           planner: SamplingPlanner | None = None) -> tuple[float, float]:
    """(median ms, GFLOP) of ``work`` after one warm-up call; FLOPs counted on one extra call, with
    ``planner``'s CUDA graph off for it (the counter cannot see the kernels of a graph replay)."""
    work()
    graphed = planner is not None and planner.cuda_graph
    if graphed:
        planner.cuda_graph = False
    try:
        with FlopCounterMode(display=False) as counter:
            work()
    finally:
        if graphed:
            planner.cuda_graph = True
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        work()
        sync(device)
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2], counter.get_total_flops() / 1e9


def matmul_gflops(device: torch.device, size: int = 1024, repeats: int = 20) -> float:
    """fp32 GFLOP/s of a ``size``³ matmul on ``device`` now (the same-run reference)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    ms, _ = _timed(lambda: [a @ b for _ in range(repeats)], device, 3)
    return 2 * size ** 3 * repeats / (ms / 1000) / 1e9


def _params_million(model: JEPAWorldModel) -> float:
    """Trained parameters in millions (the EMA target copies excluded)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("target")) / 1e6


def _model(size: str, device: torch.device) -> JEPAWorldModel:
    torch.manual_seed(0)
    return JEPAWorldModel.from_size(size, {"proprio": (5,)}, 1, target="stopgrad", horizon=HORIZON).to(device)


def time_planner(size: str, planner: str, device: torch.device, repeats: int, cuda_graph: bool = True,
                 precision: str = "fp32") -> dict:
    """ms per planned action (one environment) at the planner's default settings."""
    model = _model(size, device).eval()
    behavior = MPCBehavior(model, planner=planner, settings={"cuda_graph": cuda_graph, "precision": precision}
                           ).to(device)
    with torch.no_grad():
        state = {"latent": model.encoder({"proprio": torch.randn(1, 5, device=device)})}
    first = torch.zeros(1, dtype=torch.bool, device=device)
    ms, gflop = _timed(lambda: behavior.plan(model, state, first, sample=False), device, repeats, behavior.planner)
    name = planner if cuda_graph or device.type != "cuda" else f"{planner} (no graph)"
    name = name if precision == "fp32" else f"{name} ({precision})"
    return {"what": name, "ms": ms, "gflop": gflop}


def goal_preset() -> dict:
    """The ``jepa_goal`` preset's resolved config, composed by Hydra from the repository's ``configs/``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=["experiment=jepa_goal"]), resolve=True)


def time_goal_cem(device: torch.device, repeats: int) -> dict:
    """ms per ``jepa_goal`` action as deployed: ``MPCController`` (freshly initialised preset model and
    settings) encodes a reacher frame + proprio and runs CEM on the preset's goal energy."""
    cfg = goal_preset()
    env = envs.make_env(cfg["env"]["id"], **env_kwargs(cfg))
    torch.manual_seed(0)
    controller = MPCController(untrained_payload(cfg, env), str(device), "cem")
    obs, _ = env.reset(seed=0)
    goal, _ = env.reset(seed=1)
    env.close()
    controller.set_goal(goal)
    ms, gflop = _timed(lambda: controller.act(obs), device, repeats, controller.planner)
    return {"what": "goal-cem", "ms": ms, "gflop": gflop, "params_M": _params_million(controller.model)}


def time_update(size: str, device: torch.device, repeats: int, precision: str = "fp32") -> dict:
    """ms per ``tdmpc`` update: model loss + backward + Adam + target EMA + policy-prior step, the
    forward and backward passes in ``precision`` (as ``Trainer.update`` runs them)."""
    model = _model(size, device)
    behavior = MPCBehavior(model).to(device)
    optimizer = adam(model.parameters(), 3e-4)
    steps = HORIZON + 1
    batch = {"obs/proprio": torch.randn(BATCH, steps, 5, device=device),
             "action": torch.rand(BATCH, steps, 1, device=device) * 2 - 1,
             "reward": torch.rand(BATCH, steps, device=device),
             "is_first": torch.zeros(BATCH, steps, dtype=torch.bool, device=device),
             "is_terminal": torch.zeros(BATCH, steps, dtype=torch.bool, device=device)}

    compute = compute_precision(device, precision)

    def update() -> None:
        with compute:
            loss, _, states = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 20.0)
        optimizer.step()
        model.after_step()
        with compute:
            behavior.update(model, states)

    ms, gflop = _timed(update, device, repeats)
    return {"what": "update" if precision == "fp32" else f"update ({precision})", "ms": ms, "gflop": gflop}


def run(quick: bool = False, device_choice: str = "auto") -> dict:
    """MPPI, CEM and the tdmpc update for the ~1M (xs) and ~5M (s) JEPA, CPU (and CUDA when present)."""
    devices = benchmark_devices(device_choice)
    sizes = ["xs"] if quick else ["xs", "s"]
    repeats = 3 if quick else 7
    rows = []
    for device in devices:
        rate = matmul_gflops(device)
        for size in sizes:
            params = _params_million(_model(size, device))
            results = [time_planner(size, "mppi", device, repeats),
                       time_planner(size, "mppi", device, repeats, precision="bf16"),
                       time_update(size, device, repeats),
                       time_update(size, device, repeats, precision="bf16"),
                       time_planner(size, "cem", device, 1 if quick else 3)]
            if size == "xs":
                results.append(time_goal_cem(device, 1 if quick else 3))
            if device.type == "cuda":  # what the CUDA graph saves, measured in the same run
                results.append(time_planner(size, "mppi", device, repeats, cuda_graph=False))
            for result in results:
                bound = result["gflop"] / rate * 1000
                reference = REFERENCE_MS[size].get(result["what"].split()[0])
                # goal-cem's result carries its own params_M, which replaces the tdmpc model's
                rows.append({"size": size, "params_M": params, "device": str(device), **result,
                             "matmul_gflops": rate, "matmul_bound_ms": bound, "bound_fraction": bound / result["ms"],
                             "tdmpc2_ms": reference,
                             "speedup_vs_tdmpc2": reference / result["ms"] if reference else None})
    print_table("Planner and tdmpc update: ms per call (median; matmul-bound time from this run's matmul rate)",
                ["size", "params (M)", "device", "what", "GFLOP", "ms", "matmul GFLOP/s", "matmul-bound ms",
                 "% of bound", "TD-MPC2 ms", "× TD-MPC2"],
                [[r["size"], r["params_M"], r["device"], r["what"], r["gflop"], r["ms"], r["matmul_gflops"],
                  r["matmul_bound_ms"], 100 * r["bound_fraction"], r["tdmpc2_ms"] or "-",
                  r["speedup_vs_tdmpc2"] or "-"] for r in rows])
    return {"planner": rows, "planner_reference_ms": REFERENCE_MS,
            "planner_settings": {"mppi": "horizon 3, 6 iterations, 512 samples + 24 prior, 64 elites; "
                                         "(bf16): the same with precision=bf16",
                                 "cem": "horizon 12, 10 iterations, 1000 candidates, 100 elites",
                                 "goal-cem": "the jepa_goal preset through MPCController (configs/experiment/"
                                             "jepa_goal.yaml: its model, CEM settings and goal energy)",
                                 "update": f"batch {BATCH}, horizon {HORIZON}; (bf16): precision=bf16"}}
