"""Run a training or benchmark process on jemalloc that keeps its freed pages.

A Dreamer update allocates and frees hundreds of large tensors (activations and gradients of
1024 × 16 × 512 elements and more). PyTorch's CPU allocator is plain ``malloc``: glibc serves
such blocks from fresh ``mmap`` pages or from a fragmented heap top, so the kernel zero-fills
them page by page on every update (12,000-220,000 page faults per S actor-critic update on this
project's CPU; an out-of-place add of 100 MB took 5-8× as long as the same add in place).
jemalloc with purging off (``dirty_decay_ms:-1``) reuses the same pages. Measured with
``scripts/benchmark.py learner`` on the quiet machine (2 runs on jemalloc, 1 on the system malloc):
the float32 rows gain most (S proprio backprop actor-critic 3,647-3,649 ms against 4,850; S pixels
world model 2,679-2,721 against 4,408); the bf16 rows, whose tensors are half the size, stay within
the machine's noise (S proprio ``bf16_full`` update 2,176-2,322 ms against 2,204), though an
interleaved A/B of that actor-critic update alone gave 12% (1,750 against 1,994 ms). tcmalloc
gave 5% there, glibc's own ``mallopt`` knobs no stable gain. This is PyTorch's own CPU tuning
advice; a preload has to be in place when the process starts, so :func:`run_on_jemalloc`
re-executes the script once.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

#: set to "system" to keep the C library's malloc
OPT_OUT = "WM_ROBOTICS_MALLOC"
#: jemalloc never returns freed pages to the OS (the RSS stays at the process's peak)
MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
#: marks the re-executed process; with a variable's name appended, that variable's value before
_GUARD = "_WM_ROBOTICS_REEXEC"


def jemalloc_library() -> str | None:
    """jemalloc's shared library name (e.g. ``libjemalloc.so.2``), None where it is not installed."""
    return ctypes.util.find_library("jemalloc")


def jemalloc_loaded() -> bool:
    """Whether this process runs on jemalloc (Linux: it is mapped into the process)."""
    try:
        with open("/proc/self/maps") as maps:
            return "libjemalloc" in maps.read()
    except OSError:
        return False


def run_on_jemalloc() -> bool:
    """Re-execute the running script with jemalloc preloaded, unless it already runs on it, jemalloc is
    not installed (``apt-get install libjemalloc2``; scripts/install.sh does), the platform is not
    Linux, or ``WM_ROBOTICS_MALLOC=system``. Call it first thing in a script, before heavy imports;
    it returns only when no re-execution happens, with whether the process runs on jemalloc. The
    re-executed process hands its children (e.g. simulator workers) the environment it was started
    with, so only the script itself runs on jemalloc."""
    if _GUARD in os.environ:  # the re-executed process (or a failed preload: never loop)
        for name in ("LD_PRELOAD", "MALLOC_CONF"):
            saved = os.environ.pop(_GUARD + name, "")
            if saved:
                os.environ[name] = saved
            else:
                os.environ.pop(name, None)
        del os.environ[_GUARD]
        return jemalloc_loaded()
    if jemalloc_loaded():
        return True
    library = jemalloc_library() if sys.platform.startswith("linux") else None
    if library is None or os.environ.get(OPT_OUT) == "system":
        return False
    env = {**os.environ, _GUARD: "1",
           **{_GUARD + name: os.environ.get(name, "") for name in ("LD_PRELOAD", "MALLOC_CONF")},
           "LD_PRELOAD": " ".join(filter(None, [os.environ.get("LD_PRELOAD"), library])),
           # the user's last: it wins
           "MALLOC_CONF": ",".join(filter(None, [MALLOC_CONF, os.environ.get("MALLOC_CONF")]))}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return False
    return True  # not reached: execve replaces the process
