"""Timing helpers: interleaved rounds so a ratio to a reference survives a noisy machine."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from wm_robotics.allocator import jemalloc_loaded
from wm_robotics.atomic import write_text_atomic
from wm_robotics.precision import PRECISIONS, emulated_bf16, native_bf16

#: ``--device`` choices: ``auto`` = the CPU, plus CUDA when present
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def benchmark_devices(choice: str = "auto") -> list[torch.device]:
    """The devices a benchmark runs on for ``--device`` ``choice`` (one of ``DEVICE_CHOICES``)."""
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {choice!r}; valid devices: {DEVICE_CHOICES}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device")
    if choice == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [torch.device(choice)]


def timed_precisions(device: torch.device, wanted: Sequence[str]) -> list[str]:
    """The precisions of ``wanted`` worth timing on ``device``: the bfloat16 ones only where it has bf16 kernels
    (:func:`~wm_robotics.precision.native_bf16`; emulated, they take minutes per row at the larger sizes);
    prints which it skips."""
    if native_bf16(device):
        return list(wanted)
    kept = [precision for precision in wanted if PRECISIONS[precision] is None]
    skipped = [precision for precision in wanted if precision not in kept]
    if skipped:
        print(f"{device}: the {' / '.join(skipped)} rows are skipped: {emulated_bf16()}")
    return kept


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a wall-clock timer measures it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(work: Callable[[], int], seconds: float) -> float:
    """Items per second of ``work`` (which returns how many items one call did), run ≥ ``seconds``."""
    done, start = 0, time.perf_counter()
    while True:
        done += work()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def interleaved_rates(cases: dict[str, Callable[[], int]], rounds: int = 5, seconds: float = 0.4) -> dict[str, float]:
    """Median rate per case over ``rounds`` rounds that visit every case in turn."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for name, work in cases.items():
        work()  # warm-up: first calls build caches, contexts and buffers
    for _ in range(rounds):
        for name, work in cases.items():
            samples[name].append(rate(work, seconds))
    return {name: float(np.median(values)) for name, values in samples.items()}


#: the CPU of sessions 1-19, on which the peers' first reference times were measured (DESIGN.md); ``isa``: what
#: ``torch.backends.cpu.get_cpu_capability()`` says of such a CPU (it had AVX-512 with BF16)
SESSIONS_1_19_CPU = {"machine": "2-core CPU of sessions 1-19 (DESIGN.md)", "matmul_gflops": 180.0, "isa": "AVX512"}

#: GFLOP of the reference work (:func:`matmul_reference`): 20 fp32 1024³ matmuls
MATMUL_GFLOP = 2 * 1024 ** 3 * 20 / 1e9


def matmul_reference(device: torch.device) -> Callable[[], object]:
    """The machine's reference work, ``MATMUL_GFLOP`` of fp32 1024³ matmuls: its rate is the matmul rate of a run."""
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    return lambda: [a @ b for _ in range(20)]


def matmul_gflops(device: torch.device, rounds: int = 5) -> float:
    """The median fp32 matmul rate (GFLOP/s) of ``rounds`` runs of :func:`matmul_reference` after a warm-up."""
    work = matmul_reference(device)
    work()
    spent = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        work()
        sync(device)
        spent.append(time.perf_counter() - start)
    return MATMUL_GFLOP / float(np.median(spent))


def cpu_rate(rows: list[dict]) -> float:
    """This machine's fp32 matmul rate (GFLOP/s) for choosing a reference measurement: the median of the CPU rows'
    ``matmul_gflops`` (each timed with its row), so that a neighbour's burst at one moment cannot pick the wrong
    CPU; timed anew when no row has one."""
    rates = [row["matmul_gflops"] for row in rows if row["device"] == "cpu" and "matmul_gflops" in row]
    return float(np.median(rates)) if rates else matmul_gflops(torch.device("cpu"))


def nearest_reference(references: Sequence[dict], rate: float, peer: str, isa: str | None = None) -> dict:
    """Of a peer's reference measurements (each with the ``matmul_gflops`` and the ``isa`` of the CPU it was made
    on), the one made on the CPU whose matmul rate is nearest ``rate`` (this run's) among those of this CPU's
    vector ISA (``isa``, default :func:`cpu_isa`; all of them when none matches): a noisy 2-core machine's rate
    moves by ±20% between runs, so the rate alone can pick a CPU of another kind. Prints which, and a warning when
    even that one is more than 25% away or of another ISA: then the × columns compare two different machines."""
    isa = cpu_isa() if isa is None else isa
    alike = [ref for ref in references if ref.get("isa") == isa] or list(references)
    chosen = min(alike, key=lambda ref: abs(math.log(ref["matmul_gflops"] / rate)))
    print(f"{peer} reference: {chosen['machine']} ({chosen.get('isa', '?')}, matmul {chosen['matmul_gflops']:.0f} "
          f"GFLOP/s; this run {isa}, {rate:.0f})")
    if chosen.get("isa") != isa:
        print(f"WARNING: {peer}'s times were measured on a CPU with {chosen.get('isa', 'unknown')} kernels, this one "
              f"has {isa}: the × {peer} column compares two different machines")
    if abs(math.log(chosen["matmul_gflops"] / rate)) > math.log(1.25):
        print(f"WARNING: {peer}'s times were measured on a CPU whose fp32 matmul rate is "
              f"{chosen['matmul_gflops']:.0f} GFLOP/s, this one's is {rate:.0f}: the × {peer} column compares "
              "two different machines")
    return chosen


def cpu_isa() -> str:
    """The vector instruction set torch's CPU kernels use here, e.g. "AVX2", "AVX512"."""
    return torch.backends.cpu.get_cpu_capability()


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a Markdown table (so it can be pasted into the README as is)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:,.3g}" if isinstance(v, float) and abs(v) < 100 else
                                 f"{v:,.0f}" if isinstance(v, float) else str(v) for v in row) + " |")


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), or "unknown"."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def machine() -> dict[str, str | int]:
    """What the figures were measured on."""
    return {
        "cpu_count": os.cpu_count() or 0,
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "isa": cpu_isa(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "malloc": "jemalloc" if jemalloc_loaded() else "system",
    }


def write_json(path: str | os.PathLike, results: dict) -> Path:
    """Write ``results`` (plus machine info) as JSON, atomically."""
    return write_text_atomic(path, json.dumps({"machine": machine(), **results}, indent=2))
