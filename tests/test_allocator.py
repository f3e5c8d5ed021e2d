"""run_on_jemalloc: a script re-executes itself once on jemalloc, keeps its arguments, stops paying
page faults for the large tensors it allocates again and again, and leaves its children's environment alone; what it
printed before is not lost, a process on jemalloc already is not re-executed, a preload that did not take says so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wm_robotics.allocator import _GUARD, OPT_OUT, jemalloc_library

SCRIPT = """
import resource, sys
from wm_robotics.allocator import jemalloc_loaded, run_on_jemalloc
on = run_on_jemalloc()
import torch
torch.set_num_threads(1)
torch.ones(4 << 20)  # 16 MiB, allocated, written, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(4 << 20)
import os
leaked = [name for name in os.environ if name.startswith("_WM_ROBOTICS")]
given = [os.environ.get(name, "-") for name in ("LD_PRELOAD", "MALLOC_CONF")]
print(on, jemalloc_loaded(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, len(leaked), *given,
      sys.flags.dev_mode, *sys.argv[1:])
"""


def run_script(tmp_path, *python_options: str, source: str = SCRIPT, **env: str) -> list[str]:
    """The words ``source`` prints, run with a clean allocator environment plus ``env``."""
    script = tmp_path / "script.py"
    script.write_text(source)
    unset = ("LD_PRELOAD", "MALLOC_CONF", OPT_OUT, "PYTHONUNBUFFERED")  # output buffered, as in a pipe by default
    clean = {k: v for k, v in os.environ.items() if k not in unset and not k.startswith("_WM_ROBOTICS")}
    result = subprocess.run([sys.executable, *python_options, str(script), "x=1", "--flag"], capture_output=True,
                            text=True, check=True, env={**clean, **env}, timeout=120)
    return result.stdout.split()


needs_jemalloc = pytest.mark.skipif(not sys.platform.startswith("linux") or jemalloc_library() is None,
                                    reason="needs jemalloc (apt-get install libjemalloc2) on Linux")


@needs_jemalloc
def test_script_reexecutes_on_jemalloc_and_reuses_its_pages(tmp_path):
    on, loaded, faults, leaked, preload, conf, dev, *args = run_script(tmp_path)
    assert (on, loaded, dev, args) == ("True", "True", "False", ["x=1", "--flag"])
    assert int(faults) < 100  # 10 × 16 MiB allocated again; glibc took ~24,000 page faults here
    assert (leaked, preload, conf) == ("0", "-", "-")  # children (simulator workers) get the script's own environment

    on, loaded, faults, leaked, *_, args = run_script(tmp_path, **{OPT_OUT: "system"})
    assert (on, loaded, args) == ("False", "False", "--flag")

    # the interpreter's options are kept; a user's own preload and jemalloc settings are theirs (their decay wins)
    on, loaded, faults, leaked, preload, conf, dev, *args = run_script(
        tmp_path, "-X", "dev", LD_PRELOAD="libm.so.6", MALLOC_CONF="dirty_decay_ms:0")
    assert (on, loaded, leaked, preload, conf, dev) == ("True", "True", "0", "libm.so.6", "dirty_decay_ms:0", "True")
    assert int(faults) > 1000  # freed pages handed back at once: faulted in again

BUFFERED = """
print("started", flush=False)  # buffered: a pipe is block-buffered
from wm_robotics.allocator import jemalloc_loaded, run_on_jemalloc
print(run_on_jemalloc(), jemalloc_loaded())
"""


@needs_jemalloc
def test_output_written_before_the_reexecution_is_flushed_not_lost(tmp_path):
    # the first process's buffered line is written before execve replaces it; the second process writes its own
    assert run_script(tmp_path, source=BUFFERED) == ["started", "started", "True", "True"]


@needs_jemalloc
def test_a_process_already_on_jemalloc_is_not_reexecuted(tmp_path):
    assert run_script(tmp_path, source=BUFFERED, LD_PRELOAD=jemalloc_library()) == ["started", "True", "True"]


def test_a_reexecuted_process_without_jemalloc_reports_it_and_restores_the_environment(tmp_path):
    """As after a preload that did not take: the guard is set but jemalloc is not mapped; no second re-execution."""
    source = ("import os\nfrom wm_robotics.allocator import run_on_jemalloc\n"
              "print(run_on_jemalloc(), sorted(k for k in os.environ if k.startswith('_WM_ROBOTICS')),"
              " os.environ.get('MALLOC_CONF', '-'))\n")
    env = {_GUARD: "1", _GUARD + "MALLOC_CONF": "narenas:1", "MALLOC_CONF": "dirty_decay_ms:-1"}
    assert run_script(tmp_path, source=source, **env) == ["False", "[]", "narenas:1"]
