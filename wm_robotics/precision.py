"""Compute precision of training updates and planner searches (``precision=fp32|bf16|bf16_full``).

``"bf16"`` runs matmuls and convolutions in bfloat16 under ``torch.autocast`` (DreamerV3's compute
dtype); parameters, optimiser states and gradients stay float32, and so do every MLP's output
layer (``nets.OutputLinear``: rewards, value logits, latents, categorical logits), two-hot decodes,
losses and the planner's statistics. ``"bf16_full"`` also runs the output layers in bfloat16 and
casts their results to float32, as DreamerV3 does (bf16 logits, float32 distributions): the
float32 output layers of ``"bf16"`` are what planners need, but in the Dreamer update they cost
a float32 matmul and a cast of the hidden activations per head. On CPUs with AVX-512 BF16 or
AMX a large matmul runs ~2× faster; on a CPU whose oneDNN has no bfloat16 kernels (AVX2 only) it is
emulated and runs 11-21× slower than float32, and a bf16 context there warns once per call site.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import warnings
from typing import Callable

import torch

#: compute dtypes by name (None: no autocast)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "bf16_full": torch.bfloat16}
_FLOAT32_OUTPUT_LAYERS = contextvars.ContextVar("float32_output_layers", default=True)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError listing them."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {sorted(PRECISIONS)}")
    return precision


def float32_output_layers() -> bool:
    """Whether output layers compute in float32 under autocast (False inside a ``bf16_full`` context)."""
    return _FLOAT32_OUTPUT_LAYERS.get()


class _ComputePrecision:
    """Autocast plus the output-layer policy; reusable (``with`` it as often as needed, nested too: each entry
    has an autocast of its own, since one keeps the state it restores on itself)."""

    def __init__(self, make_autocast: Callable[[], torch.autocast], float32_outputs: bool) -> None:
        self.make_autocast, self.float32_outputs = make_autocast, float32_outputs
        self._entered: list[tuple[contextvars.Token, torch.autocast]] = []

    def __enter__(self) -> None:
        autocast = self.make_autocast()
        self._entered.append((_FLOAT32_OUTPUT_LAYERS.set(self.float32_outputs), autocast))
        autocast.__enter__()

    def __exit__(self, *exc_info) -> None:
        token, autocast = self._entered.pop()
        autocast.__exit__(*exc_info)
        _FLOAT32_OUTPUT_LAYERS.reset(token)


@functools.cache
def _cpu_bf16_kernels() -> bool:
    """Whether this CPU's oneDNN has bfloat16 kernels (asked once per process: the answer cannot change)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the query: assume the kernels are there
        return True


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` has bfloat16 matmul kernels: CUDA does; a CPU when its oneDNN has them (AVX-512 and
    newer), not on AVX2, where bf16 is emulated (:func:`emulated_bf16`)."""
    return device.type != "cpu" or _cpu_bf16_kernels()


@functools.cache
def emulated_bf16() -> str:
    """What bf16 costs on a CPU without bf16 kernels, for the warnings and notes that say so."""
    return (f"this CPU has no bfloat16 matmul kernels ({torch.backends.cpu.get_cpu_capability()}; they need "
            "AVX-512): bf16 is emulated, 11-21x slower than fp32 in session 21's planner benchmark")


def compute_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """A context running ``device``'s matmuls in ``precision`` (one of :data:`PRECISIONS`); a bf16 precision
    on a CPU without bf16 kernels (:func:`native_bf16`) warns, once per call site, that it runs slower."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    if not native_bf16(device):
        warnings.warn(f"precision={precision!r}: {emulated_bf16()}; use precision='fp32'", stacklevel=2)
    # no weight-cast cache on CUDA: a CUDA graph must not capture tensors the cache frees afterwards
    return _ComputePrecision(functools.partial(torch.autocast, device.type, dtype=dtype,
                                               cache_enabled=device.type != "cuda"),
                             float32_outputs=precision != "bf16_full")


def in_compute_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` cast once to the autocast dtype active on its device, unchanged outside autocast: for
    an input that several layers read (autocast would cast it again for each; the values are the same)."""
    device = tensor.device.type
    return tensor.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else tensor
