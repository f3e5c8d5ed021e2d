"""Checkpoints, more: RNG states restored exactly (cached normals included); missing, truncated and foreign files
refused with errors that name them."""

import random

import numpy as np
import pytest
import torch

from wm_robotics.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def _draws() -> list:
    return [random.gauss(0, 1), random.random(), float(np.random.standard_normal()), float(np.random.random()),
            torch.rand(3).tolist()]


def test_saved_rng_states_give_the_same_draws_after_a_restore(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves the second normal of a pair cached
    np.random.standard_normal(3)  # an odd count: numpy caches one too, and its position moves off 624
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = _draws()
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert _draws() == expected


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"no checkpoint at {tmp_path / 'run' / 'latest.pt'}"):
        load_checkpoint(tmp_path / "run" / "latest.pt")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=f"no checkpoint at {tmp_path / 'run' / 'checkpoints' / 'latest.pt'}"):
        load_checkpoint(tmp_path / "run")


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "latest.pt", {"weights": torch.arange(1000.0)})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"latest\.pt is not a readable checkpoint"):
        load_checkpoint(path)


def test_a_torch_file_that_is_not_a_wm_robotics_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    for name in ("other.pt", "list.pt"):
        with pytest.raises(CheckpointError, match=f"{name} is not a wm_robotics checkpoint .*checkpoint/1"):
            load_checkpoint(tmp_path / name)
