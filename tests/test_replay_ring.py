"""SequenceReplay, more: terminal flags of a sampled terminated episode, a ring grown after it wrapped, load()
replacing memory, refused episodes leaving no file, file numbers past gaps, the sampler's seed and saved state."""

import numpy as np
import pytest

from tests.test_replay import check_sequences, make_episode
from wm_robotics.checkpoint import load_checkpoint, save_checkpoint
from wm_robotics.data.episodes import EpisodeFormatError, list_episodes, save_episode
from wm_robotics.data.replay import SequenceReplay


def test_a_terminated_episode_marks_its_last_observation_terminal_and_a_truncated_one_does_not():
    replay = SequenceReplay(None, seq_len=6, batch_size=64, seed=3)
    replay.add_episode(make_episode(1, 5, terminated=True))
    replay.add_episode(make_episode(2, 5, terminated=False))
    batch = replay.sample()
    episodes = check_sequences(batch, 6)[0]
    assert set(episodes) == {1, 2}
    for terminal, ep in zip(batch["is_terminal"], episodes):
        assert terminal.tolist() == [False] * 5 + [ep == 1]


def test_growing_a_ring_that_has_wrapped_keeps_every_stored_step():
    replay = SequenceReplay(None, capacity=20, seq_len=2, batch_size=2000, seed=1)
    for ep in range(4):  # 6 observations each: the fourth evicts the first and wraps the 18-step ring
        replay.add_episode(make_episode(ep, 5))
    replay.add_episode(make_episode(4, 1))  # 20 needed: the wrapped ring grows to 20
    assert (replay.num_episodes, replay.num_steps, replay.nbytes // 20 * 20) == (4, 20, replay.nbytes)
    batch = replay.sample()
    episodes, starts = check_sequences(batch, 2)
    assert set(zip(episodes, starts)) == {(ep, s) for ep in (1, 2, 3) for s in range(5)} | {(4, 0)}
    for reward, ep, start in zip(batch["reward"], episodes, starts):
        assert reward.tolist() == [0 if t == 0 else 100 * ep + t for t in (start, start + 1)]


def test_a_sequence_longer_than_the_capacity_is_refused_before_any_data():
    with pytest.raises(ValueError, match="seq_len=64 exceeds capacity=10: no sequence could ever be sampled"):
        SequenceReplay(None, capacity=10, seq_len=64)


def test_load_forgets_episodes_added_before_it(tmp_path):
    for ep in range(2):
        save_episode(tmp_path / f"episode-{ep:06d}-len4.npz", make_episode(ep, 4))
    replay = SequenceReplay(None, seq_len=3, batch_size=200)
    replay.add_episode(make_episode(7, 4))
    assert replay.load(tmp_path) == 10 and (replay.num_episodes, replay.num_steps) == (2, 10)
    assert set(check_sequences(replay.sample(), 3)[0]) == {0, 1}


def test_a_refused_episode_writes_no_file_and_keeps_the_next_number(tmp_path):
    replay = SequenceReplay(tmp_path, capacity=10, seq_len=3)
    first = replay.add_episode(make_episode(0, 4))
    other = make_episode(1, 4)
    other["action"] = np.zeros((4, 6), np.float32)  # another env's action size
    with pytest.raises(ValueError, match="does not match the stored ones"):
        replay.add_episode(other)
    with pytest.raises(ValueError, match="more than capacity=10"):
        replay.add_episode(make_episode(2, 10))
    assert list_episodes(tmp_path) == [first] and replay.num_episodes == 1
    assert replay.add_episode(make_episode(3, 4)).name == "episode-000001-len4.npz"


def test_new_files_are_numbered_past_the_largest_index_even_with_gaps(tmp_path):
    for index in (0, 2):  # episode-000001 deleted by hand
        save_episode(tmp_path / f"episode-{index:06d}-len4.npz", make_episode(index, 4))
    replay = SequenceReplay.from_directory(tmp_path, seq_len=3)
    assert replay.add_episode(make_episode(3, 4)).name == "episode-000003-len4.npz"
    assert [path.name[:14] for path in list_episodes(tmp_path)] == [f"episode-{i:06d}" for i in (0, 2, 3)]


def _filled(seed: int) -> SequenceReplay:
    replay = SequenceReplay(None, seq_len=3, batch_size=32, seed=seed)
    for ep, steps in enumerate([4, 9, 6]):
        replay.add_episode(make_episode(ep, steps))
    return replay


def test_the_seed_picks_the_batches():
    same = [_filled(4).sample()["obs/proprio"] for _ in range(2)]
    assert np.array_equal(*same) and not np.array_equal(same[0], _filled(5).sample()["obs/proprio"])


def test_a_saved_sampler_state_gives_the_same_next_batches_through_a_weights_only_checkpoint(tmp_path):
    replay = _filled(0)
    replay.sample()
    save_checkpoint(tmp_path / "latest.pt", {"replay": replay.state_dict()})
    expected = [replay.sample(), replay.sample_steps(50), replay.sample(5)]
    resumed = _filled(123)
    resumed.load_state_dict(load_checkpoint(tmp_path)["replay"])
    for want, got in zip(expected, [resumed.sample(), resumed.sample_steps(50), resumed.sample(5)]):
        assert got.keys() == want.keys() and all(np.array_equal(got[key], want[key]) for key in want)


def test_load_names_a_truncated_episode_file(tmp_path):
    replay = SequenceReplay(tmp_path, seq_len=3)
    replay.add_episode(make_episode(0, 4))
    path = replay.add_episode(make_episode(1, 4))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # as a disk without atomic renames might
    with pytest.raises(EpisodeFormatError, match=r"episode-000001-len4\.npz: not a readable episode file"):
        SequenceReplay(tmp_path, seq_len=3).load()
