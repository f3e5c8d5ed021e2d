"""Episode files: format, round trip, and atomic writes that survive an interruption."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from wm_robotics.atomic import UMASK
from wm_robotics.data.episodes import EpisodeFormatError, EpisodeRecorder, list_episodes, load_episode, save_episode


def _episode(steps=5, pixels=True):
    obs = {"proprio": np.zeros(3, np.float32)}
    if pixels:
        obs["pixels"] = np.zeros((8, 8, 3), np.uint8)
    recorder = EpisodeRecorder(obs)
    for t in range(steps):
        recorder.add(np.full(2, t, np.float32), {k: v + t + 1 for k, v in obs.items()}, float(t), False, t == steps - 1)
    return recorder.episode()


def test_recorder_and_round_trip(tmp_path):
    episode = _episode()
    assert episode["obs/pixels"].shape == (6, 8, 8, 3) and episode["obs/pixels"].dtype == np.uint8
    assert episode["action"].shape == (5, 2) and episode["reward"].dtype == np.float32
    assert episode["truncated"].tolist() == [False] * 4 + [True]
    path = save_episode(tmp_path / "ep.npz", episode)
    assert path.stat().st_mode & 0o777 == 0o666 & ~UMASK  # a plain file's mode, not mkstemp's 0600
    loaded = load_episode(path)
    assert set(loaded) == set(episode)
    for key in episode:
        np.testing.assert_array_equal(loaded[key], episode[key])


def test_bad_episode_is_refused(tmp_path):
    episode = _episode()
    episode["reward"] = episode["reward"][:-1]
    with pytest.raises(EpisodeFormatError, match="reward has 4 entries, expected 5"):
        save_episode(tmp_path / "bad.npz", episode)
    with pytest.raises(EpisodeFormatError, match=r"obs/pixels has 7 entries, expected 6 \(T\+1\)"):
        save_episode(tmp_path / "bad.npz", {**_episode(), "obs/pixels": np.zeros((7, 8, 8, 3), np.uint8)})
    with pytest.raises(EpisodeFormatError, match="missing obs/\\*"):
        save_episode(tmp_path / "bad.npz", {k: v for k, v in _episode().items() if not k.startswith("obs/")})
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_episode_file_is_named_in_the_error(tmp_path):
    (tmp_path / "stray.npz").write_bytes(b"not a zip")
    with pytest.raises(EpisodeFormatError, match="stray.npz: not a readable episode file"):
        load_episode(tmp_path / "stray.npz")
    np.savez(tmp_path / "short.npz", **{**_episode(), "reward": np.zeros(4, np.float32)})
    with pytest.raises(EpisodeFormatError, match="short.npz: .*reward has 4 entries, expected 5"):
        load_episode(tmp_path / "short.npz")
    episode = save_episode(tmp_path / "good.npz", _episode()).read_bytes()
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "flipped.npz").write_bytes(episode[:100] + bytes(b ^ 0xFF for b in episode[100:300]) + episode[300:])
    np.save(tmp_path / "one_array.npy", np.zeros(3))
    os.replace(tmp_path / "one_array.npy", tmp_path / "one_array.npz")
    np.savez(tmp_path / "scalar.npz", **{**_episode(), "reward": np.float32(1.0)})
    for name in ("empty.npz", "flipped.npz", "one_array.npz", "scalar.npz"):  # EOFError, zlib.error, TypeError
        with pytest.raises(EpisodeFormatError, match=f"{name}: not a readable episode file"):
            load_episode(tmp_path / name)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def explode(handle, **arrays):
        handle.write(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", explode)
    with pytest.raises(OSError, match="disk full"):
        save_episode(tmp_path / "ep.npz", _episode())
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_never_leaves_a_half_file(tmp_path):
    writer = (
        "import numpy as np, sys\n"
        "from wm_robotics.data.episodes import save_episode\n"
        "big = np.random.default_rng(0).integers(0, 255, (2001, 256, 256, 3), dtype=np.uint8)\n"
        "ep = {'obs/pixels': big, 'action': np.zeros((2000, 1), np.float32), 'reward': np.zeros(2000, np.float32),\n"
        "      'terminated': np.zeros(2000, bool), 'truncated': np.zeros(2000, bool)}\n"
        "print('writing', flush=True)\n"
        "save_episode(sys.argv[1], ep)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path / "ep.npz")], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"writing"
    deadline = time.time() + 30
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    half_written = any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert half_written, "the writer finished (or never started) before the kill: nothing was tested"
    assert not (tmp_path / "ep.npz").exists()
    assert list_episodes(tmp_path) == []


def _recorder(steps):
    recorder = EpisodeRecorder({"proprio": np.zeros(2)})
    for t in range(steps):
        recorder.add([0.5 * t, -1.0], {"proprio": np.full(2, t + 1.0)}, t, 0, 0)
    return recorder


def test_a_cut_short_episode_marks_its_last_step_truncated_not_terminated():
    recorder = _recorder(3)
    assert recorder.episode()["truncated"].tolist() == [False, False, False]
    cut = recorder.episode(cut_short=True)
    assert cut["truncated"].tolist() == [False, False, True] and cut["terminated"].tolist() == [False] * 3
    assert recorder.episode()["truncated"].tolist() == [False, False, False]  # the recorder itself is unchanged


def test_an_empty_recorder_cut_short_gives_an_empty_episode():
    episode = EpisodeRecorder({"proprio": np.zeros(2)}).episode(cut_short=True)
    assert episode["truncated"].shape == episode["action"].shape[:1] == (0,) and episode["obs/proprio"].shape == (1, 2)


def test_the_recorder_stores_float32_actions_and_rewards_and_bool_flags_whatever_it_is_given():
    episode = _recorder(2).episode()
    assert episode["action"].dtype == episode["reward"].dtype == np.float32
    assert episode["terminated"].dtype == episode["truncated"].dtype == np.bool_
    assert episode["action"].tolist() == [[0.0, -1.0], [0.5, -1.0]] and episode["reward"].tolist() == [0.0, 1.0]
    assert episode["obs/proprio"].tolist() == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]


def test_list_episodes_gives_names_in_order_and_skips_hidden_and_temp_files(tmp_path):
    names = [f"episode-{index:06d}-len40.npz" for index in range(12)]
    for name in reversed(names):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".episode-000012-len40.npz").write_bytes(b"")
    (tmp_path / ".episode-000013-len40.npz-abcd.tmp").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert [path.name for path in list_episodes(tmp_path)] == names


def test_list_episodes_orders_numbered_files_by_number_past_the_zero_padding(tmp_path):
    names = ["mine.npz", "episode-999999-len4.npz", "episode-1000000-len4.npz", "episode-1000001.npz"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in list_episodes(tmp_path)] == names  # by name, 1000000 came before 999999
