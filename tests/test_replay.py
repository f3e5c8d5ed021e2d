"""SequenceReplay: uniform sampling within episodes, alignment, eviction, persistence, memory."""

from collections import Counter

import numpy as np
import pytest
import torch

from wm_robotics.data.episodes import list_episodes, save_episode
from wm_robotics.data.replay import SequenceReplay, to_torch


def make_episode(ep: int, steps: int, terminated: bool = False, pixels: bool = False) -> dict[str, np.ndarray]:
    """obs/proprio[t] = (ep, t); action[t] = (ep, t+1) and reward[t] = 100 ep + t + 1 lead to obs t+1."""
    t = np.arange(steps + 1)
    episode = {
        "obs/proprio": np.stack([np.full(steps + 1, ep), t], -1).astype(np.float32),
        "action": np.stack([np.full(steps, ep), t[1:]], -1).astype(np.float32),
        "reward": (100 * ep + t[1:]).astype(np.float32),
        "terminated": np.zeros(steps, bool),
        "truncated": np.zeros(steps, bool),
    }
    episode["terminated" if terminated else "truncated"][-1] = True
    if pixels:
        episode["obs/pixels"] = np.random.default_rng(ep).integers(0, 256, (steps + 1, 64, 64, 3), np.uint8)
    return episode


def check_sequences(batch: dict[str, np.ndarray], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Assert every sequence is contiguous inside one episode; return (episode ids, start steps)."""
    ep, step = batch["obs/proprio"][..., 0], batch["obs/proprio"][..., 1]
    assert (ep == ep[:, :1]).all(), "a sequence crosses an episode boundary"
    assert (step == step[:, :1] + np.arange(seq_len)).all(), "a sequence is not contiguous"
    return ep[:, 0].astype(int), step[:, 0].astype(int)


def test_sampling_is_uniform_over_all_valid_starts():
    lengths = {0: 4, 1: 9, 2: 1, 3: 6}  # actions; episode 2 (2 observations) is too short to sample
    replay = SequenceReplay(None, seq_len=4, batch_size=500, seed=1)
    for ep, steps in lengths.items():
        replay.add_episode(make_episode(ep, steps))
    assert replay.num_episodes == 4 and replay.num_steps == len(replay) == sum(lengths.values()) + 4
    counts = Counter()
    for _ in range(8):
        counts.update(zip(*check_sequences(replay.sample(), 4)))
    valid = {(ep, s) for ep, steps in lengths.items() for s in range(steps + 1 - 4 + 1)}
    assert set(counts) == valid
    expected = 4000 / len(valid)
    assert all(0.75 * expected < n < 1.25 * expected for n in counts.values()), counts


def test_alignment_follows_dreamer_convention():
    replay = SequenceReplay(None, seq_len=6, batch_size=3)
    replay.add_episode(make_episode(1, 5, terminated=True))
    replay.add_episode(make_episode(2, 5, terminated=False))  # time limit: truncated, not terminal
    batch = replay.sample()
    assert batch["obs/proprio"].shape == (3, 6, 2) and batch["action"].shape == (3, 6, 2)
    assert {k: v.dtype for k, v in batch.items()} == {
        "obs/proprio": np.float32, "action": np.float32, "reward": np.float32,
        "is_first": bool, "is_terminal": bool, "is_last": bool}
    for i, ep in enumerate(check_sequences(batch, 6)[0]):
        np.testing.assert_array_equal(batch["action"][i, 0], [0, 0])
        np.testing.assert_array_equal(batch["action"][i, 1:], np.stack([np.full(5, ep), np.arange(1, 6)], -1))
        np.testing.assert_array_equal(batch["reward"][i], [0] + [100 * ep + t for t in range(1, 6)])
        np.testing.assert_array_equal(batch["is_first"][i], [True] + [False] * 5)
        np.testing.assert_array_equal(batch["is_last"][i], [False] * 5 + [True])
        np.testing.assert_array_equal(batch["is_terminal"][i], [False] * 5 + [ep == 1])


def test_fifo_eviction_by_capacity_across_ring_wraps():
    replay = SequenceReplay(None, capacity=20, seq_len=3, batch_size=256)
    for ep in range(4):
        replay.add_episode(make_episode(ep, 5))  # 6 observations each
    assert (replay.num_episodes, replay.num_steps) == (3, 18)
    assert set(check_sequences(replay.sample(), 3)[0]) == {1, 2, 3}
    for ep, steps in zip(range(4, 12), [2, 7, 3, 9, 4, 1, 8, 5]):  # wraps the ring several times
        replay.add_episode(make_episode(ep, steps))
        assert replay.num_steps <= 20
    assert (replay.num_episodes, replay.num_steps) == (3, 9 + 2 + 6)  # episodes 9, 10, 11
    assert set(check_sequences(replay.sample(), 3)[0]) == {10, 11}  # episode 9 has 2 observations
    with pytest.raises(ValueError, match="capacity=20"):
        replay.add_episode(make_episode(99, 20))
    replay.add_episode(make_episode(12, 19))  # exactly capacity observations fit
    assert (replay.num_episodes, replay.num_steps) == (1, 20)


def test_persistence_reload_and_new_names(tmp_path):
    replay = SequenceReplay(tmp_path, seq_len=3, batch_size=64, seed=5)
    paths = [replay.add_episode(make_episode(ep, 4 + ep)) for ep in range(3)]
    assert paths == list_episodes(tmp_path) and paths[0].name == "episode-000000-len4.npz"
    assert replay.add_episode(make_episode(9, 4), save=False) is None
    (tmp_path / ".episode-000003-abc.tmp").write_bytes(b"half a file")  # a killed writer's leftover
    (tmp_path / "._episode-000000-len4.npz").write_bytes(b"macOS metadata")  # a hidden file, though named .npz
    assert list_episodes(tmp_path) == paths

    restarted = SequenceReplay(tmp_path, seq_len=3, batch_size=64, seed=5)
    assert restarted.load() == 5 + 6 + 7 and restarted.num_episodes == 3
    reference = SequenceReplay(None, seq_len=3, batch_size=64, seed=5)
    for ep in range(3):
        reference.add_episode(make_episode(ep, 4 + ep))
    got, want = restarted.sample(), reference.sample()  # same seed, same contents: same batch
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)

    new = restarted.add_episode(make_episode(3, 4))
    assert new.name == "episode-000003-len4.npz" and list_episodes(tmp_path) == paths + [new]
    newest = SequenceReplay(tmp_path, capacity=14, seq_len=3)
    assert newest.load() == 5 + 7  # the newest files that fit: episodes 3 and 2
    assert set(check_sequences(newest.sample(200), 3)[0]) == {2, 3}


def test_from_directory_accepts_any_npz_name(tmp_path):
    for ep, name in enumerate(["episode-000000.npz", "b_run.npz", "zz.npz"]):
        save_episode(tmp_path / name, make_episode(ep, 5))
    replay = SequenceReplay.from_directory(tmp_path, seq_len=5, batch_size=128)
    assert (replay.num_episodes, replay.num_steps) == (3, 18)
    assert set(check_sequences(replay.sample(), 5)[0]) == {0, 1, 2}
    assert replay.add_episode(make_episode(3, 5)).name == "episode-000001-len5.npz"


def test_load_names_the_file_of_another_spec_and_keeps_nothing(tmp_path):
    save_episode(tmp_path / "a.npz", make_episode(0, 5))
    other = make_episode(1, 5)
    other["action"] = np.zeros((5, 6), np.float32)  # another env's action size
    save_episode(tmp_path / "b.npz", other)
    replay = SequenceReplay(None, seq_len=3)
    with pytest.raises(ValueError, match=r"b\.npz: episode does not match the stored ones"):
        replay.load(tmp_path)
    assert (replay.num_episodes, replay.num_steps, replay.spec) == (0, 0, {})


def test_pixels_stay_uint8_without_per_sequence_copies():
    episodes = [make_episode(ep, 99, pixels=True) for ep in range(4)]
    replay = SequenceReplay(None, capacity=400, seq_len=16, batch_size=8)
    for episode in episodes:
        replay.add_episode(episode)
    per_step = 64 * 64 * 3 + 2 * 4 + 2 * 4 + 4 + 3  # pixels, proprio, action, reward, three flags
    assert replay.num_steps == 400 and replay.nbytes == 400 * per_step  # ~12.3 KB per step
    before = replay.nbytes
    batch = replay.sample()
    assert batch["obs/pixels"].dtype == np.uint8 and batch["obs/pixels"].shape == (8, 16, 64, 64, 3)
    ep, start = check_sequences(batch, 16)
    np.testing.assert_array_equal(batch["obs/pixels"][0], episodes[ep[0]]["obs/pixels"][start[0]:start[0] + 16])
    assert replay.nbytes == before
    unbounded = SequenceReplay(None, seq_len=16)
    for episode in episodes:
        unbounded.add_episode(episode)
    assert unbounded.nbytes <= 1.5 * replay.nbytes + per_step


def test_to_torch_keeps_dtypes():
    replay = SequenceReplay(None, seq_len=4, batch_size=2)
    replay.add_episode(make_episode(0, 6, pixels=True))
    tensors = to_torch(replay.sample(), "cpu")
    assert tensors["obs/pixels"].dtype == torch.uint8 and tensors["is_first"].dtype == torch.bool
    assert tensors["action"].dtype == torch.float32 and tensors["action"].shape == (2, 4, 2)


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"seq_len": -1}, {"batch_size": 0}, {"seq_len": 2.5},
                                    {"capacity": None}, {"seq_len": float("nan")}, {"batch_size": "16"}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be a positive integer"):
        SequenceReplay(None, **kwargs)
    assert SequenceReplay(None, capacity=1e6).capacity == 1_000_000  # as a command line may give it


def test_independent_steps_cover_every_stored_step_uniformly_after_eviction():
    replay = SequenceReplay(None, capacity=20, seq_len=3, seed=2)
    for ep, steps in zip(range(6), [5, 7, 3, 9, 4, 6]):  # wraps the ring; episodes 4 and 5 stay (12 observations)
        replay.add_episode(make_episode(ep, steps))
    batch = replay.sample_steps(4000)
    assert batch["obs/proprio"].shape == (4000, 2) and batch["reward"].shape == (4000,)
    counts = Counter(map(tuple, batch["obs/proprio"].astype(int)))
    stored = {(ep, t) for ep, steps in [(4, 4), (5, 6)] for t in range(steps + 1)}
    assert replay.num_steps == len(stored) and set(counts) == stored
    expected = 4000 / len(stored)
    assert all(0.6 * expected < n < 1.4 * expected for n in counts.values()), counts
    with pytest.raises(ValueError, match="count"):
        replay.sample_steps(0)
    with pytest.raises(ValueError, match="empty replay"):
        SequenceReplay(None).sample_steps(4)


def test_errors_when_nothing_can_be_sampled():
    replay = SequenceReplay(None, seq_len=10)
    assert not replay.can_sample
    with pytest.raises(ValueError, match="0 steps stored"):
        replay.sample()
    replay.add_episode(make_episode(0, 5))
    assert not replay.can_sample
    with pytest.raises(ValueError, match=r"seq_len=10: 6 steps stored in 1 episodes, longest 6"):
        replay.sample()
    replay.add_episode(make_episode(1, 9))
    assert replay.can_sample
    with pytest.raises(ValueError, match="batch_size"):
        replay.sample(0)
    with pytest.raises(ValueError, match="obs/pixels"):
        replay.add_episode(make_episode(2, 9, pixels=True))
    with pytest.raises(ValueError, match="directory"):
        replay.load()


def test_files_set_aside_free_their_numbers_for_the_next_episodes(tmp_path):
    replay = SequenceReplay(tmp_path, seq_len=3)
    for ep in range(5):
        replay.add_episode(make_episode(ep, 4))
    aside = replay.set_aside_from(3)
    assert sorted(path.name for path in aside.iterdir()) == ["episode-000003-len4.npz", "episode-000004-len4.npz"]
    assert replay.add_episode(make_episode(5, 4)).name == "episode-000003-len4.npz"


def test_load_keeps_a_contiguous_run_of_the_newest_files(tmp_path):
    replay = SequenceReplay(tmp_path, seq_len=3)
    for ep, steps in enumerate([4, 5, 6, 4]):  # 5, 6, 7, 5 observations
        replay.add_episode(make_episode(ep, steps))
    newest = SequenceReplay(tmp_path, capacity=17, seq_len=3)
    assert newest.load() == 5 + 7  # episodes 3 and 2; episode 1 (6) does not fit, so neither does anything older
    assert set(check_sequences(newest.sample(200), 3)[0]) == {2, 3}
    exact = SequenceReplay(tmp_path, capacity=18, seq_len=3)
    assert exact.load() == 5 + 7 + 6  # episodes 3, 2 and 1 fill it exactly


def test_loading_a_newest_episode_longer_than_the_capacity_says_so(tmp_path):
    save_episode(tmp_path / "episode-000000-len10.npz", make_episode(0, 10))  # 11 observations
    with pytest.raises(ValueError, match=r"episode-000000-len10.npz: episode has 11 observations, more than "
                                         r"capacity=5"):
        SequenceReplay(None, capacity=5, seq_len=3).load(tmp_path)


def test_each_set_aside_gets_its_own_folder(tmp_path):
    replay = SequenceReplay(tmp_path, seq_len=3)
    for ep in range(3):
        replay.add_episode(make_episode(ep, 4))
    first = replay.set_aside_from(2)
    replay.add_episode(make_episode(3, 5))  # numbered 2 again
    second = replay.set_aside_from(1)
    assert (first.name, second.name) == ("resume-1", "resume-2")
    assert [path.name for path in first.iterdir()] == ["episode-000002-len4.npz"]
    assert sorted(path.name for path in second.iterdir()) == ["episode-000001-len4.npz", "episode-000002-len5.npz"]


def test_load_numbers_new_files_past_those_written_since_the_replay_was_made(tmp_path):
    replay = SequenceReplay(tmp_path, seq_len=3)
    writer = SequenceReplay(tmp_path, seq_len=3)
    writer.add_episode(make_episode(0, 4))
    assert replay.load() == 5
    assert replay.add_episode(make_episode(1, 4)).name == "episode-000001-len4.npz"
    assert len(list_episodes(tmp_path)) == 2  # the writer's file is still there


def test_storage_grows_by_half_its_size_at_least():
    replay = SequenceReplay(None, capacity=100, seq_len=3)
    per_step = 2 * 4 + 2 * 4 + 4 + 3  # proprio, action, reward, three flags
    replay.add_episode(make_episode(0, 9))  # 10 observations: allocates 10
    assert replay.nbytes == 10 * per_step
    replay.add_episode(make_episode(1, 1))  # 12 needed: grows to 15, not 12
    assert replay.nbytes == 15 * per_step
    replay.add_episode(make_episode(2, 79))  # 92 needed: grows to 92
    replay.add_episode(make_episode(3, 3))  # 96 needed: 1.5 × 92 is capped at the capacity
    assert replay.nbytes == 100 * per_step
