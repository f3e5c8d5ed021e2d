"""The pieces video frames are made of: panels and their gaps, padding, annotations, error maps, curve cursors and the
imagination panels' labels."""

import imageio.v3 as iio
import numpy as np
import pytest

from wm_robotics.imagination import Imagination
from wm_robotics.imagination_video import imagination_frames
from wm_robotics.video import CurvePanel, episode_frames, error_map, side_by_side, write_video


def test_panels_are_joined_by_white_gaps():
    black = np.zeros((8, 8, 3), np.uint8)
    joined = side_by_side([black, black])
    assert joined.shape == (8, 18, 3)
    assert (joined[:, 8:10] == 255).all() and (joined[:, :8] == 0).all() and (joined[:, 10:] == 0).all()


@pytest.mark.parametrize("height, width", [(33, 64), (32, 65), (33, 65)])
def test_an_mp4_of_odd_height_or_width_gets_one_white_row_or_column(tmp_path, height, width):
    frames = iio.imread(write_video(tmp_path / "odd.mp4", np.zeros((3, height, width, 3), np.uint8)))
    assert frames.shape == (3, height + height % 2, width + width % 2, 3)
    padding = frames[:, height:] if height % 2 else frames[:, :, width:]
    assert padding.size and padding.mean() > 230
    assert frames[:, 4:height - 4, 4:width - 4].mean() < 10


def test_episode_frames_show_the_reward_of_arriving_and_the_return_so_far(annotations):
    episode = {"obs/pixels": np.zeros((4, 8, 8, 3), np.uint8), "reward": np.array([1.0, 2.0, 3.0], np.float32)}
    assert len(episode_frames(episode, size=8, title="run")) == 4
    assert annotations == [["run", "step 0", "reward 0.00", "return 0.0"],
                           ["run", "step 1", "reward 1.00", "return 1.0"],
                           ["run", "step 2", "reward 2.00", "return 3.0"],
                           ["run", "step 3", "reward 3.00", "return 6.0"]]


def test_error_map_averages_rgb_and_applies_the_gain():
    real = np.zeros((4, 4, 3), np.uint8)
    one_channel = real.copy()
    one_channel[..., 0] = 30
    np.testing.assert_array_equal(error_map(real, one_channel), error_map(real, np.full_like(real, 10)))
    saturated = error_map(real, np.full_like(real, 255), gain=1.0)  # the colour map's top
    np.testing.assert_array_equal(error_map(real, np.full_like(real, 64)), saturated)  # 4 · 64 / 255 ≥ 1
    assert not np.array_equal(error_map(real, np.full_like(real, 32)), saturated)  # 4 · 32 / 255 ≈ 0.5
    assert not np.array_equal(error_map(real, real), saturated)


def _line_columns(image: np.ndarray) -> np.ndarray:
    """Columns holding pixels of matplotlib's first line colour (C0, #1f77b4)."""
    near = np.abs(image.astype(int) - [31, 119, 180]).sum(-1) < 40
    return np.flatnonzero(near.any(0))


def test_curve_panel_cursor_sits_at_the_step_on_the_x_axis():
    panel = CurvePanel({"error": np.array([0.0, 1.0, 0.0, 1.0, 0.0])}, 200, "curve")
    line = _line_columns(panel.image)
    for step, column in ((0, line.min()), (4, line.max())):
        red = np.flatnonzero((panel.frame(step) != panel.image).any(-1).any(0))
        assert len(red) == 1 and abs(int(red[0]) - int(column)) <= 1


def test_imagination_panels_label_context_and_imagined_steps_with_their_error(annotations):
    horizon = np.array([0, 0, 1, 2])
    result = Imagination(reward=np.array([0.0, 1.0, 2.0, 3.0]), pred_reward=np.array([0.5, 1.5, 2.5, 3.5]),
                         horizon=horizon, latent_error=horizon * 0.1, pixels=np.full((4, 8, 8, 3), 100, np.uint8),
                         proprio_error=None, anchors=[1], posterior={})
    frames = imagination_frames(result, np.zeros((4, 8, 8, 3), np.uint8), size=8, title="ep")
    assert len(frames) == 4 and frames[0].shape == (8, 3 * 8 + 2 * 2, 3)
    real, imagined, error = annotations[6:9]  # step 2
    assert real == ["ep", "real  step 2", "reward 2.00"]
    assert imagined == ["imagined h=1", "pred reward 2.50"]
    assert error == ["|error| x4", "MAE 0.392"]  # 100 / 255
    assert [annotations[3 * t + 1][0] for t in range(4)] == ["context", "context", "imagined h=1", "imagined h=2"]
