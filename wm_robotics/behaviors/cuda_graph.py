"""Replay a function of fixed-shape CUDA tensors as one CUDA graph instead of thousands of kernel launches.

A planner's search at TD-MPC2's defaults is ~2,000 small kernels per action: on a GPU their launch
overhead, not the arithmetic, sets the time. Captured once and replayed, the whole search is one
launch (TD-MPC2 gets the same from ``torch.compile(mode="reduce-overhead")``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

_VALUES = (bool, int, float, str, type(None), torch.Size, torch.dtype, torch.device)


def same_capture(old: Any, new: Any) -> bool:
    """Whether a graph captured for ``old`` serves ``new``: settings, shapes, dtypes and devices compared
    by value (in nested tuples and lists), everything else (models, objectives, tensors) by identity."""
    if isinstance(old, _VALUES):
        return type(old) is type(new) and old == new
    if isinstance(old, (tuple, list)):
        return (type(old) is type(new) and len(old) == len(new)
                and all(same_capture(a, b) for a, b in zip(old, new)))
    return old is new


def _clone(value: Any) -> Any:
    """Copies of the tensors in a nest of tuples, lists and dicts (a replay overwrites the originals)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(item) for item in value)
    return value


def release_generator(device: torch.device) -> None:
    """Take ``device``'s default CUDA generator out of capture mode after a failed capture.

    A capture that breaks leaves the generator's state marked as capturing (PyTorch ends that mark
    only in a successful ``capture_end``), and every later random draw on the device then fails with
    "Offset increment outside graph capture encountered unexpectedly". The generator gets a copy of
    its state (same seed and offset, so its stream of numbers goes on) that is not capturing.
    """
    generator = torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    generator.graphsafe_set_state(generator.clone_state())


class GraphedCall:
    """``fn(*tensors)`` captured once as a CUDA graph for these shapes, then replayed on new values.

    PyTorch's graph-safe RNG gives every replay fresh random numbers. Tensors ``fn`` reads besides
    its arguments (weights, a goal embedding) are read from their memory at each replay: in-place
    updates such as optimiser steps are seen; a tensor replaced by a new one is not, and the caller
    must capture anew (``same_capture`` on what the graph was captured for). Outputs are returned as
    copies. Capture fails with a RuntimeError when ``fn`` synchronises with the host (``.item()``,
    data-dependent shapes); the error's ``__context__`` holds the operation that broke it.
    """

    def __init__(self, fn: Callable[..., Any], args: Sequence[torch.Tensor], warmup: int = 2) -> None:
        device = args[0].device
        if device.type != "cuda":
            raise ValueError(f"GraphedCall needs CUDA tensors, got device {device}")
        self.fn = fn  # keeps alive the tensors its closure holds, which the graph reads
        self.inputs = [arg.clone() for arg in args]
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device):
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            # The outer context restores the caller's stream even when a failed capture skips the
            # inner one's restore; warm-up off the main stream sets up allocator and cuBLAS workspaces.
            try:
                with torch.cuda.stream(side):
                    for _ in range(warmup):
                        fn(*self.inputs)
                    with torch.cuda.graph(self.graph, stream=side):
                        self.outputs = fn(*self.inputs)
            except Exception:
                release_generator(device)
                raise
            torch.cuda.current_stream(device).wait_stream(side)

    def __call__(self, *args: torch.Tensor) -> Any:
        """Copy ``args`` into the captured inputs, replay the graph, return a clone of its outputs."""
        for static, value in zip(self.inputs, args, strict=True):
            static.copy_(value)
        self.graph.replay()
        return _clone(self.outputs)
