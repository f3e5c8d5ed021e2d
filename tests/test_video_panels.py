"""Video files and panels as a viewer gets them: crisp upscaling, frame rate, row layout, cursors, clear refusals."""

import imageio.v3 as iio
import numpy as np
import pytest

from wm_robotics.video import CurvePanel, episode_frames, error_map, side_by_side, stack_rows, upscale, write_video


def test_upscale_keeps_pixels_crisp_and_makes_any_frame_square():
    frame = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 0, 0], [0, 0, 255]]], np.uint8)
    big = upscale(frame, 8)
    assert big.shape == (8, 8, 3)
    np.testing.assert_array_equal(big, frame.repeat(4, 0).repeat(4, 1))  # nearest neighbour: no blended colours
    assert upscale(np.zeros((8, 16, 3), np.uint8), 8).shape == (8, 8, 3)  # a wide frame too


def test_side_by_side_refuses_panels_of_another_height_and_honours_its_gap():
    with pytest.raises(ValueError, match="panel 1 is 6 pixels tall, expected 8"):
        side_by_side([np.zeros((8, 8, 3), np.uint8), np.zeros((6, 8, 3), np.uint8)])
    joined = side_by_side([np.zeros((4, 4, 3), np.uint8)] * 3, gap=5)
    assert joined.shape == (4, 3 * 4 + 2 * 5, 3) and (joined[:, 4:9] == 255).all()


def test_stack_rows_pads_narrow_rows_white_and_puts_gaps_only_between_rows():
    wide, narrow = np.zeros((3, 6, 3), np.uint8), np.zeros((2, 4, 3), np.uint8)
    stacked = stack_rows([wide, narrow])
    assert stacked.shape == (3 + 2 + 2, 6, 3)
    assert (stacked[3:5] == 255).all() and (stacked[:3] == 0).all()  # the gap
    assert (stacked[5:, :4] == 0).all() and (stacked[5:, 4:] == 255).all()  # the narrow row, padded white
    assert stack_rows([wide, narrow], gap=0).shape == (5, 6, 3)


def test_an_mp4_plays_at_the_fps_asked_for(tmp_path):
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    assert iio.immeta(write_video(tmp_path / "slow.mp4", frames, 10), plugin="FFMPEG")["fps"] == 10


def test_write_video_refuses_frames_that_are_not_uint8_rgb(tmp_path):
    with pytest.raises(ValueError, match=r"frames must be uint8 N×H×W×3, got float32 \(2, 8, 8, 3\)"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \(2, 8, 8, 4\)"):
        write_video(tmp_path / "x.gif", np.zeros((2, 8, 8, 4), np.uint8))
    assert not list(tmp_path.iterdir())


def test_write_video_refuses_a_path_it_cannot_encode_before_any_frame_is_read(tmp_path):
    def frames():
        raise AssertionError("frames were read")
        yield

    with pytest.raises(ValueError, match=r"video path must end in one of \('.mp4', '.gif'\), got 'x.avi'"):
        write_video(tmp_path / "x.avi", frames())


def test_a_viewer_of_the_old_video_keeps_a_whole_file_when_it_is_rewritten(tmp_path):
    ramp = np.arange(5, dtype=np.uint8)[:, None, None, None] * 50 + np.zeros((1, 8, 8, 3), np.uint8)
    path = write_video(tmp_path / "clip.gif", ramp[:2])
    old = path.read_bytes()
    with path.open("rb") as viewer:
        write_video(path, ramp)
        assert viewer.read() == old
    assert iio.imread(path).shape[0] == 5 and [p.name for p in tmp_path.iterdir()] == ["clip.gif"]


def test_episode_frames_are_upscaled_and_untitled_frames_have_no_blank_line(annotations):
    episode = {"obs/pixels": np.zeros((3, 4, 4, 3), np.uint8), "reward": np.array([1.0, 2.0], np.float32)}
    frames = episode_frames(episode, size=12)
    assert [frame.shape for frame in frames] == [(12, 12, 3)] * 3
    assert annotations[0] == ["step 0", "reward 0.00", "return 0.0"]


def test_episode_frames_name_the_missing_pixel_array(annotations):
    with pytest.raises(ValueError, match=r"episode has no 'obs/pixels' array \(keys: \['action', 'obs/proprio'"):
        episode_frames({"obs/proprio": np.zeros((2, 3)), "action": np.zeros((1, 1)), "reward": np.zeros(1)})


def test_curve_panel_clamps_the_cursor_and_draws_marks_and_axes_only(tmp_path):
    curves = {"error": np.array([0.0, 1.0, 0.0, 1.0, 0.0])}
    plain, marked = CurvePanel(curves, 200, "curve"), CurvePanel(curves, 200, "curve", marks=[2])
    assert not np.array_equal(plain.image, marked.image)  # the dashed restart line
    last = np.flatnonzero((plain.frame(4) != plain.image).any(-1).any(0))
    far = np.flatnonzero((plain.frame(40) != plain.image).any(-1).any(0))
    assert far.tolist() and far.max() <= 199 and plain.frame(-5).shape == (200, 200, 3)
    assert far[0] >= last[0]
    cursor_rows = np.flatnonzero((plain.frame(2) != plain.image).any(-1).any(1))
    assert cursor_rows.min() > 0 and cursor_rows.max() < 199  # inside the axes, not over the title and ticks


def test_error_map_uses_the_gain_it_is_given():
    real = np.zeros((2, 2, 3), np.uint8)
    np.testing.assert_array_equal(error_map(real, np.full_like(real, 64), gain=1.0),
                                  error_map(real, np.full_like(real, 16)))  # 1 · 64 = 4 · 16
    dim, bright = error_map(real, np.full_like(real, 64), gain=1.0), error_map(real, np.full_like(real, 64))
    assert not np.array_equal(dim, bright)
