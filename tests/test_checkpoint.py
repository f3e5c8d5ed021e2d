"""Checkpoints: which file a folder names, pickled objects refused, GPU RNG states kept per GPU."""

from fractions import Fraction

import pytest
import torch

from wm_robotics.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_a_run_folder_or_its_checkpoints_folder_loads_the_latest_checkpoint_not_the_best(tmp_path):
    save_checkpoint(tmp_path / "checkpoints" / "latest.pt", {"which": "latest"})
    save_checkpoint(tmp_path / "checkpoints" / "best.pt", {"which": "best"})
    assert load_checkpoint(tmp_path)["which"] == load_checkpoint(tmp_path / "checkpoints")["which"] == "latest"
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["which"] == "best"


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    torch.save({"format": "wm_robotics.checkpoint/1", "ratio": Fraction(1, 3)}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="pickled.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "pickled.pt")


@pytest.mark.parametrize("gpus, restored", [(1, True), (2, False)])
def test_gpu_rng_states_are_saved_and_restored_only_on_as_many_gpus(tmp_path, monkeypatch, gpus, restored):
    state = torch.arange(8, dtype=torch.uint8)
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [state])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", calls.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert len(calls) == int(restored)
    if restored:
        [[value]] = calls
        assert torch.equal(value, state)
