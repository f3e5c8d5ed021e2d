"""Train a preset on a task; every run writes to its own folder (config, metrics, checkpoints, videos).

    python scripts/train.py experiment=dreamer env=cartpole_swingup model=xs steps=100000
    python scripts/train.py model=xs steps=3000 prefill=1000 eval_every=3000   # CPU smoke run, ~1 min
    python scripts/train.py resume=true hydra.run.dir=runs/dreamer/<...>        # continue a killed run
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from wm_robotics.train import Trainer


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    config_path = run_dir / "config.yaml"
    if not (cfg.resume and config_path.exists()):
        OmegaConf.save(cfg, config_path, resolve=True)
    Trainer(OmegaConf.to_container(cfg, resolve=True), run_dir).run()


if __name__ == "__main__":
    main()
