"""run_on_jemalloc: a script re-executes itself once on jemalloc, keeps its arguments, stops paying
page faults for the large tensors it allocates again and again, and leaves its children's environment alone."""

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
import os
leaked = [name for name in os.environ if name.startswith("_WM_ROBOTICS")]
given = [os.environ.get(name, "-") for name in ("LD_PRELOAD", "MALLOC_CONF")]
print(on, jemalloc_loaded(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, len(leaked), *given,
      sys.flags.dev_mode, *sys.argv[1:])
"""


def run_script(tmp_path, *python_options: str, **env: str) -> list[str]:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    clean = {k: v for k, v in os.environ.items()
             if k not in ("LD_PRELOAD", "MALLOC_CONF", OPT_OUT) and not k.startswith("_WM_ROBOTICS")}
    result = subprocess.run([sys.executable, *python_options, str(script), "x=1", "--flag"], capture_output=True,
                            text=True,
                            check=True, env={**clean, **env})
    return result.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux") or jemalloc_library() is None,
                    reason="needs jemalloc (apt-get install libjemalloc2) on Linux")
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
