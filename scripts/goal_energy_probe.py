"""What a goal model's energy sees near a goal: latent distance to the goal vs joint offset and velocity.

The goal state of one episode of a ``*-goal-v1`` task is moved along its first goal joint (the
reacher's shoulder) by each offset and given each velocity on that joint (others at rest); each
such observation is encoded and its distance to the goal's latent printed (the planner's goal
energy at one step, ``MPCController.goal_energy``), beside the end effector's distance to the goal.
With ``--fields`` the energy compares those proprio fields as the probe decoder reads them instead.
The goal is the one first set: a run with ``goal_energy.pose_feedback`` (``jepa_goal_frame``) corrects
it by the probe's error at every step of a real episode, which this probe leaves out.

    python scripts/goal_energy_probe.py runs/<jepa_goal run> --seed 100016 --offsets -1.5:1.5:0.1 \
        --velocities 0,0.5,1,2,4
    python scripts/goal_energy_probe.py runs/<jepa_goal run> --seed 100016 --fields position   # decoded joint angles
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from wm_robotics import MPCController, envs
from wm_robotics.behaviors.planning import GoalObjective
from wm_robotics.checkpoint import load_checkpoint
from wm_robotics.wm_metrics import set_goal_from_info


def _floats(text: str) -> np.ndarray:
    """"a,b,c" → values; "start:stop:step" → the range, stop included (an argparse type: at least one finite
    value, a positive step)."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if not step > 0:
                raise ValueError
            values = np.round(np.arange(start, stop + step / 2, step), 6)
        else:
            values = np.array([float(x) for x in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a,b,c or start:stop:step with a step > 0, got {text!r}") from None
    if values.size == 0 or not np.isfinite(values).all():
        raise argparse.ArgumentTypeError(f"must hold at least one finite value, got {text!r}")
    return values


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint file or run folder of a goal model (e.g. jepa_goal)")
    parser.add_argument("--seed", type=int, default=100_000, help="episode seed that picks the goal")
    parser.add_argument("--offsets", type=_floats, default="-1.5:1.5:0.1",
                        help="joint offsets (rad): a,b,c or start:stop:step")
    parser.add_argument("--velocities", type=_floats, default="0,0.5,1,2,4",
                        help="joint velocities (rad/s), comma-separated")
    parser.add_argument("--fields", nargs="+", default=None,
                        help="compare these proprio fields (decoded by the probe) instead of latents, e.g. position")
    parser.add_argument("--latent-weight", type=float, default=None,
                        help="with --fields: weight of the latent term added to the fields term (0: fields only; "
                             "default: the preset's goal_energy.latent_weight)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)  # a stochastic encoder (RSSM posterior sample) gives the same numbers each run
    payload = load_checkpoint(args.checkpoint)
    config = payload["config"]
    env = envs.make_env(config["env"]["id"], **envs.env_kwargs(config))  # the model's own rendering settings
    try:
        energy = {"fields": args.fields} if args.fields else {}
        if args.latent_weight is not None:
            energy["latent_weight"] = args.latent_weight
        controller = MPCController(payload, device="cpu", planner="cem", goal_energy=energy)
    except ValueError as error:
        parser.error(str(error))
    if args.latent_weight is not None and not controller.goal_energy.get("fields"):
        parser.error("--latent-weight weighs the latent term beside proprio fields, and neither --fields nor the "
                     "preset's goal_energy compares any: the energy is the latent distance alone")
    _, info = env.reset(seed=args.seed)
    if not set_goal_from_info(controller, info):
        raise SystemExit(f"goal_energy_probe.py: {config['env']['id']} is not a goal task (no goal in info)")
    objective: GoalObjective = controller.planner.objective
    goal_env = env.unwrapped
    joints = len(goal_env.goal_joints)
    velocities = args.velocities
    compared = "latent" if objective.proprio_index is None else f"proprio fields {controller.goal_energy['fields']}"
    if objective.proprio_index is not None and objective.latent_index is not None:
        compared += f" + {objective.latent_weight:g} x distance of {len(objective.latent_index)} latent dims"
    print(f"goal joints {np.round(goal_env.goal_joints, 3).tolist()}, energy = {objective.norm} distance to the goal "
          f"{compared}")
    print("| offset (rad) | effector distance (m) | " + " | ".join(f"E at {v:g} rad/s" for v in velocities) + " |")
    print("|---" * (2 + len(velocities)) + "|")
    for offset in args.offsets:
        energies, distance = [], 0.0
        for velocity in velocities:
            shift, speed = np.zeros(joints), np.zeros(joints)
            shift[0], speed[0] = offset, velocity
            obs, distance = goal_env.observation_near_goal(shift, speed)
            trajectory = {key: value[:, None] for key, value in controller.encode(obs).items()}  # (1, 1, ...)
            energies.append(-objective(controller.model, trajectory, None).item())
        print(f"| {offset:+.2f} | {distance:.3f} | " + " | ".join(f"{e:.3f}" for e in energies) + " |")


if __name__ == "__main__":
    main()
