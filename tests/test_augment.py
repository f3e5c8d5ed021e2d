import pytest
import torch

from wm_robotics.models.augment import random_shift


def dot_frames(n: int, row: int, col: int) -> torch.Tensor:
    """(n, 16, 16, 3) uint8 frames, grey with one white pixel at (row, col)."""
    frames = torch.full((n, 16, 16, 3), 50, dtype=torch.uint8)
    frames[:, row, col] = 255
    return frames


def test_each_frame_moves_by_its_own_offset_within_pad():
    torch.manual_seed(0)
    shifted = random_shift(dot_frames(400, 8, 8), pad=2)
    assert shifted.shape == (400, 16, 16, 3) and shifted.dtype == torch.uint8
    where = (shifted[..., 0] == 255).nonzero()  # (frame, row, col) of the dot: exactly one per frame
    assert where[:, 0].tolist() == list(range(400))
    moves = where[:, 1:] - 8  # the frame is sampled at (row + offset): the dot moves by -offset
    assert moves.abs().max() <= 2
    assert {tuple(m) for m in moves.tolist()} == {(r, c) for r in range(-2, 3) for c in range(-2, 3)}
    assert bool((shifted[..., 0] != 255).eq(shifted[..., 0] == 50).all())  # nothing but the dot and the grey


def test_edges_are_repeated_and_pad_zero_is_the_identity():
    torch.manual_seed(1)
    frames = dot_frames(200, 0, 5)  # the dot on the top edge
    shifted = random_shift(frames, pad=3)
    top = shifted[:, :3, 5, 0]  # a downward shift repeats the top row: the dot becomes a column
    assert bool(((top == 255).sum(1) > 1).any())
    assert random_shift(frames, pad=0) is frames
    floats = random_shift(frames.float(), pad=1)
    assert floats.dtype == torch.float32 and floats.max() == 255


def test_frames_of_any_height_and_width_keep_their_columns_in_range():
    torch.manual_seed(0)
    columns = torch.arange(10).expand(50, 4, 10)[..., None]  # (N, H=4, W=10, 1): each pixel holds its column
    shifted = random_shift(columns, pad=1)[..., 0]
    for frame in shifted:  # every row reads the columns c + offset, clamped to the frame's 10 columns
        assert any(torch.equal(frame, (torch.arange(10) + offset).clamp(0, 9).expand(4, 10)) for offset in (-1, 0, 1))
    assert shifted.max() == 9 and shifted.min() == 0


def test_bad_input_says_what_was_expected():
    with pytest.raises(ValueError, match="pad must be >= 0, got -1"):
        random_shift(dot_frames(1, 0, 0), pad=-1)
    with pytest.raises(ValueError, match=r"frames must be \(N, H, W, C\), got shape \(16, 16, 3\)"):
        random_shift(dot_frames(1, 0, 0)[0], pad=1)
