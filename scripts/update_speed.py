"""Time a saved run's updates with CPU subnormal flushing off and on, in alternating rounds.

    python scripts/update_speed.py runs/tdmpc_cpu/<run> --rounds 3 --updates 40

Restores ``checkpoints/latest.pt`` and the replay into a copy of the run (the run itself is not written to) and
prints ms per update (world model + behaviour, ``Trainer.update``; on the CPU with one torch thread, as the flag is
per thread and the CPU's) for each setting. Subnormal activations and gradients grow as a run trains;
``wm_robotics.builders.flush_denormals``, which every ``Trainer`` calls, keeps them off the CPU's slow path.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml

from wm_robotics.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder with config.yaml, checkpoints/latest.pt and (online) "
                                               "episodes/")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (off, on)")
    parser.add_argument("--updates", type=int, default=40, help="updates timed per setting and round")
    args = parser.parse_args()
    if args.rounds < 1 or args.updates < 1:
        parser.error(f"--rounds and --updates must be at least 1, got {args.rounds} and {args.updates}")
    missing = [part for part in ("config.yaml", "checkpoints/latest.pt") if not (args.run / part).is_file()]
    if missing:
        parser.error(f"{args.run} has no {' or '.join(missing)}: not a run folder with a checkpoint")
    if not torch.set_flush_denormal(True):
        parser.error("this CPU cannot flush subnormals (torch.set_flush_denormal returned False): nothing to compare")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "run"
        copy.mkdir()
        for part in ("checkpoints", "episodes"):  # an offline run has no episodes/: it reads offline.data
            if (args.run / part).is_dir():
                shutil.copytree(args.run / part, copy / part)
        cfg = yaml.safe_load((args.run / "config.yaml").read_text())
        cfg["torch_threads"], cfg["device"] = 1, "cpu"  # the flag is the CPU's: a run saved with device=auto
        trainer = Trainer(cfg, copy)
        trainer.restore()
        for _ in range(5):
            trainer.update()
        for round_ in range(args.rounds):
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                start = time.perf_counter()
                for _ in range(args.updates):
                    trainer.update()
                ms = (time.perf_counter() - start) / args.updates * 1e3
                print(f"round {round_ + 1}: flush subnormals {'on ' if flush else 'off'}  {ms:7.1f} ms per update")


if __name__ == "__main__":
    main()
