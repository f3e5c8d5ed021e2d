"""Shared test set-up: headless rendering, one torch thread for tiny models, a tiny trained run, video text."""

import os

import pytest
import torch

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """A Trainer sets torch's thread count from its config (``torch_threads``): give the next test back its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_torch_thread():
    """Tiny models are op-overhead bound: a second intra-op thread only adds sync cost (8× on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tdmpc_run(tmp_path_factory):
    """A ``tdmpc_cpu`` run shrunk to test size, trained 160 env steps: (run folder, final metrics)."""
    from tests.configs import preset_config
    from wm_robotics.train import Trainer

    run, threads = tmp_path_factory.mktemp("tdmpc"), torch.get_num_threads()
    final = Trainer(preset_config("tdmpc_cpu", "steps=160"), run).run()
    torch.set_num_threads(threads)
    return run, final


@pytest.fixture
def annotations(monkeypatch):
    """The text lines every ``annotate`` call of the video modules writes, in order (frames left unchanged)."""
    lines = []

    def record(frame, text):
        lines.append(list(text))
        return frame

    monkeypatch.setattr("wm_robotics.video.annotate", record)
    monkeypatch.setattr("wm_robotics.imagination_video.annotate", record)
    return lines
