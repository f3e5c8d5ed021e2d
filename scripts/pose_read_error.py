"""How well a JEPA's pose probe reads the robot's pose from a frame alone, on new episodes of a goal task.

For each episode seed the env is reset; the probe reads the start frame (``obs["pixels"]``) and the goal
frame (``info["goal_pixels"]``), and each read proprio dim is compared with the true one
(``obs["proprio"]``, ``info["goal_proprio"]``), the difference wrapped to [-π, π) for the angle dims
(``pose_angles``), over the dims the probe reads (``pose_dims``). Prints the median and 90th percentile
of the absolute error per dim.

    python scripts/pose_read_error.py runs/<jepa_goal run with pose_probe> --seeds 100000:100050
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from wm_robotics import envs
from wm_robotics.agent import agent_from_checkpoint
from wm_robotics.atomic import write_text_atomic
from wm_robotics.behaviors.frame_goal import angle_difference
from wm_robotics.checkpoint import load_checkpoint


def _seed_range(text: str) -> range:
    """``start:stop`` → the seeds start to stop - 1 (an argparse type: at least one seed)."""
    try:
        start, stop = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be start:stop (integers), got {text!r}") from None
    if stop <= start:
        raise argparse.ArgumentTypeError(f"must hold at least one seed (start < stop), got {text!r}")
    return range(start, stop)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint file or run folder of a JEPA trained with pose_probe=true")
    parser.add_argument("--seeds", type=_seed_range, default="100000:100050",
                        help="episode seeds start:stop (evaluate.py's goals)")
    parser.add_argument("--out", default=None, help="write the errors as JSON here")
    args = parser.parse_args()
    payload = load_checkpoint(args.checkpoint)
    model = agent_from_checkpoint(payload, torch.device("cpu")).model
    if getattr(model, "pose", None) is None:
        parser.error("the checkpoint's model has no pose probe (train with +model.overrides.pose_probe=true)")
    dims = model.pose.dims.tolist()
    keys = payload.get("proprio_keys") or [("proprio", model.pose.proprio_dim)]
    names = [f"{name}[{i}]" for name, size in keys for i in range(int(size))]
    env = envs.make_env(payload["config"]["env"]["id"], **envs.env_kwargs(payload["config"]))
    start, stop = args.seeds.start, args.seeds.stop
    is_angle = torch.isin(torch.arange(len(names)), model.pose.angles)  # (P,): the dims compared modulo 2π
    errors: dict[str, list[np.ndarray]] = {"start frames": [], "goal frames": []}
    for seed in args.seeds:
        obs, info = env.reset(seed=seed)
        for kind, frame, proprio in (("start frames", obs["pixels"], obs["proprio"]),
                                     ("goal frames", info["goal_pixels"], info["goal_proprio"])):
            read = model.read_pose({"pixels": torch.as_tensor(frame[None])})[0]
            diff = angle_difference(read, torch.as_tensor(proprio, dtype=read.dtype), is_angle)
            errors[kind].append(diff.abs()[dims].numpy())
    env.close()
    summary = {}
    print(f"pose read from a frame alone, {stop - start} episodes (seeds {start}-{stop - 1}); "
          "|error|, median / 90th pct")
    for kind, rows in errors.items():
        table = np.stack(rows)  # (episodes, dims)
        summary[kind] = {names[d]: {"median": float(np.median(table[:, j])),
                                    "p90": float(np.percentile(table[:, j], 90))} for j, d in enumerate(dims)}
        print(f"  {kind:13s} " + "  ".join(f"{names[d]}: {v['median']:.3f} / {v['p90']:.3f}"
                                           for d, v in zip(dims, summary[kind].values())))
    if args.out:
        write_text_atomic(args.out, json.dumps({"checkpoint": str(args.checkpoint), "seeds": [start, stop],
                                                 "errors": summary}, indent=2))


if __name__ == "__main__":
    main()
