"""The JEPA's pose probe (``models/pose_probe.py``): it learns the pose from frames and reads it from a frame alone,
shared or with its own reader, and trains on randomly shifted frames; its bookkeeping by hand: which proprio dims it
learns, angles as (sin, cos), where ``read`` puts each dim back and what it leaves NaN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.test_jepa import ACTIONS, OBS, small
from wm_robotics.models.jepa import JEPAWorldModel
from wm_robotics.models.pose_probe import PoseProbe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def square_frames(columns: torch.Tensor) -> torch.Tensor:
    """64x64 RGB frames (..., 64, 64, 3) uint8, black with a white 8x8 square whose left edge is at ``columns``."""
    frames = torch.zeros(*columns.shape, 64, 64, 3, dtype=torch.uint8)
    span = torch.arange(64)
    inside = (span >= columns[..., None]) & (span < columns[..., None] + 8)  # (..., 64) columns covered
    frames[..., 28:36, :, :] = (inside[..., None, :, None] * 255).to(torch.uint8)
    return frames


@pytest.mark.parametrize("reader", ["shared", "own"])
def test_pose_probe_learns_the_pose_and_reads_it_from_a_frame_alone(reader: str):
    """``shared``: the pose loss teaches the pixel block the pose; ``own``: the reader's own CNN learns it."""
    torch.manual_seed(0)
    model = JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, units=32, enc_units=32,
                           cnn_depth=4, reward=False, num_q=0, policy=False, simnorm=False, split_latent=True,
                           split_dynamics=True, pose_probe=True, pose_angles=[1], pose_reader=reader,
                           pose_dims=[0, 1])
    assert (model.pose.encoder is None) == (reader == "shared")
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)

    def angle(columns: torch.Tensor) -> torch.Tensor:
        return columns / 56 * 2 * torch.pi + 1.0

    def batch(size: int) -> dict[str, torch.Tensor]:
        """The square moves 8 px per unit of action; proprio[0] is its position, proprio[1] an angle that turns
        once over the frame's width, beyond ±π (so only its sine and cosine are seen), the rest zero."""
        start, actions = torch.randint(8, 48, (size, 1)).float(), torch.rand(size, 4, ACTIONS) * 2 - 1
        columns = (start + 8 * actions[..., 0].cumsum(1)).clamp(0, 56).round()
        proprio = torch.cat([columns[..., None] / 56, angle(columns)[..., None], torch.zeros(size, 4, OBS - 2)], -1)
        return {"obs/pixels": square_frames(columns.long()), "obs/proprio": proprio, "action": actions}

    losses = []
    for _ in range(300):
        loss, stats, _ = model.loss(batch(16))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        model.after_step()
        losses.append(stats["loss/pose"])
    assert sum(losses[-10:]) < 0.1 * sum(losses[:10])
    columns = torch.arange(0, 57, 4)
    with torch.no_grad():
        read = model.read_pose({"pixels": square_frames(columns)})
    error = (read[:, 0] - columns / 56).abs()
    assert error.median() < 0.05, error  # the square's position in [0, 1] is read from the frame alone
    assert read[:, 1].abs().max() <= torch.pi  # the angle comes back wrapped, within 0.15 rad of the true one
    turned = read[:, 1] - angle(columns)
    assert torch.atan2(turned.sin(), turned.cos()).abs().median() < 0.15
    assert bool(read[:, 2:].isnan().all())  # dims outside pose_dims are not read
    renamed = {key.replace("pose.head.", "pose_head.").replace("pose.encoder.", "pose_encoder."): value
               for key, value in model.state_dict().items()}  # a checkpoint saved before PoseProbe (session 14)
    reloaded = JEPAWorldModel(**model.config)
    reloaded.load_state_dict(renamed)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.read_pose({"pixels": square_frames(columns)}), read, equal_nan=True)
    with pytest.raises(ValueError, match="pose_probe reads proprio from the pixel block"):
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, split_latent=True,
                       pose_probe=True)
    with pytest.raises(ValueError, match=r"pose_dims must be proprio dims in \[0, 6\), got \[6\]"):
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, simnorm=False, split_latent=True,
                       split_dynamics=True, pose_probe=True, pose_dims=[6])
    with pytest.raises(ValueError, match=r"pose_dims must name at least one proprio dim .*got \[\]"):
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, simnorm=False, split_latent=True,
                       split_dynamics=True, pose_probe=True, pose_dims=[])
    with pytest.raises(ValueError, match=r"pose_angles must be proprio dims among pose_dims \[0\], got \[1\]"):
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, simnorm=False, split_latent=True,
                       split_dynamics=True, pose_probe=True, pose_angles=[1], pose_dims=[0])
    with pytest.raises(ValueError, match=r"pose_dims and pose_angles must not repeat a dim, got \[0, 0\] and \[\]"):
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, simnorm=False, split_latent=True,
                       split_dynamics=True, pose_probe=True, pose_dims=[0, 0])
    with pytest.raises(ValueError, match="read_pose needs a JEPA trained with pose_probe=true"):
        small().read_pose({"pixels": square_frames(columns)})
    with pytest.raises(ValueError, match=r"pose_reader must be one of \('shared', 'own'\), got 'cnn'"):
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, simnorm=False, split_latent=True,
                       split_dynamics=True, pose_probe=True, pose_reader="cnn")
    with pytest.raises(ValueError, match="pose_shift must be >= 0 pixels and needs pose_probe=true, got 2"):
        small(pose_shift=2)


@pytest.mark.parametrize("reader", ["shared", "own"])
def test_pose_shift_teaches_the_probe_on_randomly_shifted_frames(reader: str, monkeypatch):
    torch.manual_seed(0)
    plain = JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, units=32, enc_units=32,
                           cnn_depth=4, reward=False, num_q=0, policy=False, simnorm=False, split_latent=True,
                           split_dynamics=True, pose_probe=True, pose_reader=reader, pose_dims=[0])
    shifted = JEPAWorldModel(**{**plain.config, "pose_shift": 3})
    shifted.load_state_dict(plain.state_dict())
    batch = {"obs/pixels": square_frames(torch.randint(8, 48, (2, 4))), "obs/proprio": torch.rand(2, 4, OBS),
             "action": torch.rand(2, 4, ACTIONS) * 2 - 1}

    def pose_loss(model: JEPAWorldModel) -> float:
        with torch.no_grad():
            return model.loss(batch)[1]["loss/pose"]

    assert pose_loss(plain) == pose_loss(plain)
    assert pose_loss(shifted) != pose_loss(shifted)  # each loss shifts the frames anew
    seen = []

    def unshifted(frames: torch.Tensor, pad: int) -> torch.Tensor:
        seen.append((tuple(frames.shape), pad))
        return frames

    monkeypatch.setattr("wm_robotics.models.jepa.random_shift", unshifted)
    assert pose_loss(shifted) == pytest.approx(pose_loss(plain), rel=1e-5)  # the same reading, but of shifted frames
    assert seen[0] == ((2 * 1, 64, 64, 3), 3)  # B · starts frames (horizon 3 of 4 steps: one start each)


def test_pose_probe_refuses_repeated_dims_and_its_loss_is_a_mean_over_rows():
    settings = dict(encoder=None, cnn_depth=4, units=16, layers=1)
    with pytest.raises(ValueError, match=r"must not repeat a dim, got \[0, 1\] and \[0, 0\]"):
        PoseProbe(8, 4, [0, 1], [0, 0], **settings)
    torch.manual_seed(0)
    probe = PoseProbe(8, 4, [0, 1], [0], **settings)
    features, proprio = torch.randn(1, 8), torch.randn(1, 4)
    one = probe.loss(features, proprio)
    torch.testing.assert_close(probe.loss(features.repeat(16, 1), proprio.repeat(16, 1)), one)


SETTINGS = dict(encoder=None, cnn_depth=4, units=16, layers=1)


class FixedHead(nn.Module):
    """A head that outputs ``row`` (dims + angles,) for every row of features."""

    def __init__(self, row: torch.Tensor) -> None:
        super().__init__()
        self.row = row

    def forward(self, features: torch.Tensor, keys: list[str]) -> dict[str, torch.Tensor]:
        return {"proprio": self.row.expand(*features.shape[:-1], -1)}


def test_target_holds_the_pose_dims_in_their_order_with_angles_as_sine_then_cosine_at_the_end():
    probe = PoseProbe(8, 5, [3, 1, 4], [1, 4], **SETTINGS)  # not proprio order: angles at places 1 and 2 of dims
    proprio = torch.tensor([[10.0, 0.5, 20.0, 30.0, -2.0]])
    expected = torch.tensor([[30.0, math.sin(0.5), math.sin(-2.0), math.cos(0.5), math.cos(-2.0)]])
    torch.testing.assert_close(probe.target(proprio), expected)


def test_read_puts_each_dim_back_in_its_proprio_place_angles_wrapped_and_nan_elsewhere():
    probe = PoseProbe(8, 5, [3, 1, 4], [1, 4], **SETTINGS)
    # the head's output: dim 3 = 7.0; angle dim 1 as (sin, cos) of 2.5; angle dim 4 as (sin, cos) of 2π - 0.4 scaled
    probe.head = FixedHead(torch.tensor([7.0, math.sin(2.5), 3 * math.sin(-0.4), math.cos(2.5), 3 * math.cos(-0.4)]))
    read = probe.read(torch.zeros(2, 8))
    assert read.shape == (2, 5)
    torch.testing.assert_close(read[:, [3, 1, 4]], torch.tensor([[7.0, 2.5, -0.4]] * 2))
    assert bool(read[:, [0, 2]].isnan().all())


def test_without_pose_dims_every_proprio_dim_is_learned_and_read():
    probe = PoseProbe(8, 3, None, [2], **SETTINGS)
    torch.testing.assert_close(probe.target(torch.tensor([1.0, 2.0, 0.3])),
                               torch.tensor([1.0, 2.0, math.sin(0.3), math.cos(0.3)]))
    probe.head = FixedHead(torch.tensor([1.0, 2.0, math.sin(0.3), math.cos(0.3)]))
    torch.testing.assert_close(probe.read(torch.zeros(8)), torch.tensor([1.0, 2.0, 0.3]))


def test_the_pose_dims_are_settings_not_weights_so_checkpoints_hold_only_the_reader():
    probe = PoseProbe(8, 5, [3, 1], [1], **SETTINGS)
    assert all(key.startswith("head.") for key in probe.state_dict())  # loads checkpoints saved before the buffers
    assert {"dims", "angles", "_angle_at"} <= {name for name, _ in probe.named_buffers()}


@pytest.mark.parametrize("dims, angles", [([0, 1], [2]), (None, [3])])
def test_angles_outside_the_pose_dims_are_refused(dims, angles):
    with pytest.raises(ValueError, match="pose_angles must be proprio dims among pose_dims"):
        PoseProbe(8, 3, dims, angles, **SETTINGS)
