"""One training process per run folder: an exclusive ``flock`` on ``<run>/.lock``.

The operating system drops the lock when its process ends, however it ends (``kill -9`` included), so a resumed run
never waits on a stale lock; a second process resuming a folder that is still training (a requeued cluster job
beside the one still running) is refused instead of writing its episode files and checkpoints over the first's.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class RunFolderBusyError(RuntimeError):
    """Another process is training in this run folder."""


class RunLock:
    """Holds ``<run_dir>/.lock`` exclusively from construction until ``release`` (or the process's end); the file
    names the holder's host and pid for the error a second process gets."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "unknown"
            self._handle.close()
            raise RunFolderBusyError(f"{self.path.parent} is being trained by another process ({holder}); wait for "
                                     "it to end (or stop it) before resuming this run") from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self._handle.flush()

    def release(self) -> None:
        """Let another process train in the folder (closing the file drops the lock)."""
        if not self._handle.closed:
            self._handle.close()
