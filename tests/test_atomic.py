"""The atomic writer behind checkpoints, episode files, metrics, reports and videos."""

from __future__ import annotations

import os

import pytest

from wm_robotics.atomic import UMASK, write_atomic, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "metrics.csv", "old")

    def half_then_fail(handle):
        handle.write(b"half a new file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o666 & ~UMASK


def test_the_file_and_then_its_folder_are_synced(tmp_path, monkeypatch):
    synced, fsync = [], os.fsync

    def record(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    def rename(source, target):
        synced.append(f"rename to {target}")
        replace(source, target)

    replace = os.replace
    monkeypatch.setattr(os, "fsync", record)
    monkeypatch.setattr(os, "replace", rename)
    path = write_text_atomic(tmp_path / "checkpoint.pt", "weights")
    assert len(synced) == 3 and synced[0].endswith(".tmp") and synced[1:] == [f"rename to {path}", str(path.parent)]


def test_an_interrupted_write_leaves_no_temp_file(tmp_path):
    def interrupted(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "checkpoint.pt", interrupted)
    assert list(tmp_path.iterdir()) == []
