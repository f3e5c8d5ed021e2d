"""Drive a raw dm_control loop with MPCController (no Gymnasium, no Hydra): the robotics use case. Pixel models see
frames from dm_control's pixels.Wrapper, rendered with the checkpoint's render_kwargs.

    python scripts/run_controller.py runs/<run> --planner mppi --episodes 2 --threads 1
    python scripts/run_controller.py runs/<run> --set iterations=6 --set samples=512 --set elites=64 --device cuda
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

from wm_robotics.envs import suite_task  # first: it chooses MUJOCO_GL (EGL when headless) before dm_control loads

# isort: split
from dm_control import suite
from dm_control.suite.wrappers import pixels

from wm_robotics import MPCController
from wm_robotics.builders import set_torch_threads
from wm_robotics.checkpoint import CheckpointError, load_checkpoint
from wm_robotics.control import PLANNERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint file or run folder")
    parser.add_argument("--planner", default="mppi", choices=PLANNERS)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=100_000,
                        help="task seed of the first episode (then +1 per episode) and the planner's torch seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="torch device of the model: auto | cpu | cuda")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a planner setting over the checkpoint's preset (repeatable), e.g. samples=512")
    args = parser.parse_args()
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        settings[key] = yaml.safe_load(value)
    try:
        set_torch_threads(args.threads, "--threads")
    except ValueError as error:
        parser.error(str(error))
    torch.manual_seed(args.seed)  # the planners sample with torch's generator: seeded, a run repeats
    if args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    try:
        payload = load_checkpoint(args.checkpoint)
        config = payload["config"]
        if "-goal" in config["env"]["id"]:
            raise ValueError(f"this script drives raw dm_control reward tasks; the checkpoint was trained on the goal "
                             f"task {config['env']['id']} (use scripts/evaluate.py)")
        controller = MPCController(payload, device=args.device, planner=args.planner, **settings)
        if "pixels" in controller.obs_shapes and controller.render_kwargs is None:
            raise ValueError(f"the checkpoint (obs_mode={config['obs_mode']}) does not record how its frames were "
                             "rendered: it predates render_kwargs in checkpoints (use scripts/evaluate.py)")
    except (CheckpointError, ValueError) as error:
        parser.error(str(error))
    domain, task = suite_task(config["env"]["id"])
    returns, actions, start = [], 0, time.perf_counter()
    for episode in range(args.episodes):
        env = raw = suite.load(domain, task, task_kwargs={"random": args.seed + episode})
        if controller.render_kwargs is not None:  # a pixel model: dm_control renders the frames it was trained on
            env = pixels.Wrapper(raw, pixels_only="proprio" not in controller.obs_shapes,
                                 render_kwargs=controller.render_kwargs)
        time_step, total = env.reset(), 0.0
        controller.reset()
        while not time_step.last():
            action = controller.act(time_step.observation)
            actions += 1
            for repeat in range(controller.action_repeat):  # the model was trained with this action repeat
                last = repeat == controller.action_repeat - 1  # only the frame the controller sees next is rendered
                time_step = (env if last else raw).step(action)
                total += time_step.reward
                if time_step.last():
                    break
        returns.append(total)
        qpos = np.array2string(env.physics.data.qpos, precision=2, suppress_small=True, max_line_width=10_000)
        print(f"episode {episode}: return {total:.1f}, final qpos {qpos}")
    print(f"{args.planner} {controller.planner_settings} on {domain}-{task} ({controller.device}): return "
          f"{np.mean(returns):.1f} ± {np.std(returns):.1f} over {args.episodes} episodes, "
          f"{1000 * (time.perf_counter() - start) / actions:.1f} ms per action")


if __name__ == "__main__":
    main()
