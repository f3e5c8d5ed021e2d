"""What a checkpoint's critic and policy prior make of a line of states at rest (the parked-cart diagnosis).

One joint of the checkpoint's dm_control task is set to each of ``--values`` (the other joints at ``--qpos``,
all velocities 0); each such observation is encoded as an episode's first and the script prints the prior's mean
action there and V = Q(z, prior's mean action), averaged over all Q heads (the expectation of TD-MPC2's mean of
two random heads), with the lowest and highest head. Where the prior's mean action crosses zero is where its
policy comes to rest; where V peaks is where the critic would rather be.

    python scripts/value_probe.py runs/<tdmpc run> --joint 0 --values -1 -0.6 -0.2 0 0.2 0.6 1   # cartpole: cart x
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from dm_control import suite

from wm_robotics import MPCController
from wm_robotics.checkpoint import CheckpointError, load_checkpoint
from wm_robotics.envs import suite_task


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint file or run folder of a proprio model with Q heads and a prior")
    parser.add_argument("--joint", type=int, default=0, help="index into qpos of the joint to vary")
    parser.add_argument("--values", type=float, nargs="+", default=[-1.0, -0.6, -0.2, 0.0, 0.2, 0.6, 1.0])
    parser.add_argument("--qpos", type=float, nargs="+", default=None,
                        help="the other joints' positions (default: all 0, for cartpole the pole upright)")
    args = parser.parse_args()
    try:
        payload = load_checkpoint(args.checkpoint)
        controller = MPCController(payload, device="cpu", planner="policy")
    except (CheckpointError, ValueError) as error:
        parser.error(str(error))
    config, model = payload["config"], controller.model
    if config["obs_mode"] != "proprio" or getattr(model, "q", None) is None or getattr(model, "policy", None) is None:
        parser.error("the checkpoint needs proprio observations, Q heads and a policy prior (e.g. tdmpc_cpu)")
    domain, task = suite_task(config["env"]["id"])
    env = suite.load(domain, task)
    env.reset()
    physics = env.physics
    qpos = np.zeros(physics.model.nq) if args.qpos is None else np.asarray(args.qpos, np.float64)
    if qpos.shape != (physics.model.nq,) or not 0 <= args.joint < physics.model.nq:
        parser.error(f"{domain} has {physics.model.nq} joint positions: --qpos takes that many values and "
                     f"--joint an index below it; got {qpos.size} and {args.joint}")
    print(f"{domain}-{task}, qpos {qpos.tolist()} at rest, joint {args.joint} varied; V over {model.q.size} Q heads")
    print("| joint value | prior's mean action | V (mean of heads) | lowest head | highest head |")
    print("|---|---|---|---|---|")
    for value in args.values:
        with physics.reset_context():
            physics.data.qpos[:] = qpos
            physics.data.qpos[args.joint] = value
            physics.data.qvel[:] = 0.0
        features = model.features(controller.encode(env.task.get_observation(physics)))
        action = model.pi(features, sample=False)[0]
        heads = model.twohot.decode(model.q(torch.cat([features, action], -1), None))[:, 0]  # (heads,)
        mean_action = "[" + ", ".join(f"{a:+.2f}" for a in action[0].tolist()) + "]"
        print(f"| {value:+.2f} | {mean_action} | {heads.mean():.1f} | {heads.min():.1f} | {heads.max():.1f} |")


if __name__ == "__main__":
    main()
