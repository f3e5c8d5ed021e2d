"""Train a preset on a task; every run writes to its own folder (config, metrics, checkpoints, videos).

    python scripts/train.py experiment=dreamer env=cartpole_swingup model=xs steps=100000
    python scripts/train.py experiment=dreamer_cpu steps=3000 prefill=1000 eval_every=3000 \
        eval_episodes=1  # CPU smoke, ~1-2 min
    python scripts/train.py resume=runs/dreamer/<...> steps=200000              # continue a killed run
    python scripts/train.py resume=true hydra.run.dir=runs/dreamer/<...>        # the same, Hydra style
    python scripts/collect.py env=reacher_easy episodes=50 out=$PWD/data/reacher video=null
    python scripts/train.py env=reacher_easy offline.data=data/reacher offline.updates=5000  # offline

Resuming, in either form, reuses the folder's saved ``config.yaml``; overrides on the command line
(e.g. a larger ``steps=``) are applied on top, except config-group choices (``experiment=``, ``env=``,
...) and deletions, which a run ignores. ``resume=true`` on a folder without a checkpoint starts a run
there with the command's config; a new run (no ``resume``) in a folder that already holds one is refused.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before heavy imports: re-executes once on jemalloc when installed
    from wm_robotics.allocator import run_on_jemalloc

    run_on_jemalloc()  # WM_ROBOTICS_MALLOC=system keeps the C library's malloc

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from wm_robotics.atomic import write_text_atomic
from wm_robotics.train import Trainer


def resolve_run(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """The config and run folder: a fresh Hydra folder, or the run folder named by ``resume`` (a path,
    or ``true`` for ``hydra.run.dir`` once it holds a checkpoint) with its saved config and this
    command's value overrides."""
    hydra_cfg = HydraConfig.get()
    named = _names_a_folder(cfg.resume)
    run_dir = Path(hydra.utils.to_absolute_path(cfg.resume) if named else hydra_cfg.runtime.output_dir)
    saved = run_dir / "config.yaml"
    if named and not saved.exists():
        raise FileNotFoundError(f"resume={cfg.resume!r}: no config.yaml in {run_dir} (not a run folder)")
    fresh = cfg.resume in (False, "false")
    typed = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)  # each line as typed, "${...}" kept
    cfg.command_overrides = _recorded(typed)
    if fresh and saved.exists():
        raise SystemExit(f"train.py: {run_dir} already holds a run ({saved.name}): resume=true continues it; a new run "
                         f"needs another hydra.run.dir")
    if fresh or not (named or (run_dir / "checkpoints" / "latest.pt").exists()):
        return cfg, run_dir  # a fresh run; resume=true before the first checkpoint starts over with this command
    merged, ignored, applied = OmegaConf.load(saved), [], []
    for line, override in zip(typed, OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))):
        key = override.key_or_group
        if key in ("resume", "hydra", "command_overrides") or key.startswith(("hydra.", "hydra/")):
            continue
        if key in hydra_cfg.runtime.choices or override.is_delete():
            ignored.append(override.input_line)
        else:
            OmegaConf.update(merged, key, override.value(), force_add=True)
            applied.append(line)
    if merged.get("command_overrides") is not None:  # a run started before they were recorded keeps them unknown
        saved_lines = OmegaConf.to_container(merged.command_overrides, resolve=False)  # as saved: "${" unescaped
        merged.command_overrides = _recorded([*saved_lines, *applied])
    if ignored:
        print(f"resume: ignoring {' '.join(ignored)}: a run keeps the config groups and keys it started with ({saved})")
    merged.resume = True
    return merged, run_dir


def _names_a_folder(resume: object) -> bool:
    """Whether ``resume`` (as Hydra parsed it) names a run folder rather than saying true or false."""
    return isinstance(resume, str) and resume not in ("true", "false")


def _recorded(overrides: list[str]) -> list[str]:
    """The command line's overrides that say what a run is (``resume`` and ``command_overrides`` left out), with
    ``${`` escaped so that saving the resolved config keeps them as typed."""
    return [line.replace("${", "\\${") for line in overrides
            if line.lstrip("+~").partition("=")[0] not in ("resume", "command_overrides")]


def resume_folder_as_run_dir(argv: list[str]) -> list[str]:
    """``argv`` with ``hydra.run.dir=<folder>`` added when ``resume=<folder>`` names one, so that Hydra writes its
    own files into that run instead of creating a fresh, empty run folder elsewhere. A later command's Hydra files
    go beside the first command's ``.hydra``, never over them: ``.hydra/resume_<time>`` (a command that does not
    resume, which is refused: ``.hydra/refused_<time>``)."""
    named = [arg for arg in argv if arg.startswith("resume=")]
    resume = OverridesParser.create().parse_overrides(named[-1:])[0].value() if named else False  # as Hydra reads it
    run_dirs = [arg.partition("=")[2] for arg in argv if arg.startswith("hydra.run.dir=")]
    kind = "refused" if resume in (False, "false") else "resume"
    subdir = f"hydra.output_subdir=.hydra/{kind}_${{now:%Y-%m-%d_%H-%M-%S}}"
    if any(arg.startswith("hydra.output_subdir=") for arg in argv):
        return argv
    if _names_a_folder(resume) and not run_dirs:
        if not (Path(resume) / "config.yaml").exists():  # refused before Hydra makes the folder (a typo's stray one)
            raise SystemExit(f"train.py: resume={resume!r}: no config.yaml in {Path(resume).absolute()} (not a run "
                             "folder)")
        return [*argv, f"hydra.run.dir={resume}", subdir]
    if run_dirs and (Path(run_dirs[-1]) / ".hydra").is_dir():
        return [*argv, subdir]
    return argv


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cfg, run_dir = resolve_run(cfg)
    if OmegaConf.select(cfg, "offline.data"):  # absolute, so a resumed run finds it from any working directory
        cfg.offline.data = hydra.utils.to_absolute_path(cfg.offline.data)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(OmegaConf.to_container(cfg, resolve=True), run_dir)  # checks the config before it is kept
    trainer.start()  # and a resumed run's checkpoint against it
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    trainer.run()


if __name__ == "__main__":
    sys.argv = resume_folder_as_run_dir(sys.argv)
    main()
