"""The atomic writer, more: the data is flushed before the file is synced; the temp file is hidden beside it."""

from __future__ import annotations

import os

from wm_robotics.atomic import write_atomic, write_text_atomic


def test_the_data_reaches_the_file_before_it_is_synced(tmp_path, monkeypatch):
    sizes, fsync = [], os.fsync

    def record(fd):
        sizes.append(os.fstat(fd).st_size)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    write_text_atomic(tmp_path / "metrics.csv", "step,return\n1,2\n")
    assert sizes[0] == len("step,return\n1,2\n")


def test_the_temp_file_is_hidden_beside_the_target_while_it_is_written(tmp_path):
    write_text_atomic(tmp_path / "latest.pt", "old")
    seen = []

    def write(handle):
        handle.write(b"new")
        seen.extend(sorted(path.name for path in tmp_path.iterdir()))

    write_atomic(tmp_path / "latest.pt", write)
    [temp] = [name for name in seen if name != "latest.pt"]
    assert temp.startswith(".latest.pt-") and temp.endswith(".tmp") and len(seen) == 2
    assert (tmp_path / "latest.pt").read_text() == "new" and os.listdir(tmp_path) == ["latest.pt"]
