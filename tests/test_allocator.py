"""run_on_jemalloc: a script re-executes itself once on jemalloc, keeps its arguments, and stops
paying page faults for the large tensors it allocates again and again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wm_robotics.allocator import OPT_OUT, jemalloc_library

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
print(on, jemalloc_loaded(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, *sys.argv[1:])
"""


def run_script(tmp_path, **env: str) -> list[str]:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", OPT_OUT)}
    result = subprocess.run([sys.executable, str(script), "x=1", "--flag"], capture_output=True, text=True,
                            check=True, env={**clean, **env})
    return result.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux") or jemalloc_library() is None,
                    reason="needs jemalloc (apt-get install libjemalloc2) on Linux")
def test_script_reexecutes_on_jemalloc_and_reuses_its_pages(tmp_path):
    on, loaded, faults, *args = run_script(tmp_path)
    assert (on, loaded, args) == ("True", "True", ["x=1", "--flag"])
    assert int(faults) < 100  # glibc: thousands (below)

    on, loaded, faults, *args = run_script(tmp_path, **{OPT_OUT: "system"})
    assert (on, loaded, args) == ("False", "False", ["x=1", "--flag"])
    assert int(faults) >= 4096  # at least one 16 MiB tensor on fresh pages (24,573 faults on this CPU)
