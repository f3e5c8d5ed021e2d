"""One training process per run folder: an exclusive ``flock`` on ``<run>/.lock``.

The operating system drops the lock when its process ends, however it ends (``kill -9`` included), so a resumed run
never waits on a stale lock; a second process resuming a folder that is still training (a requeued cluster job
beside the one still running) is refused instead of writing its episode files and checkpoints over the first's.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: runs go unlocked
    fcntl = None


class RunFolderBusyError(RuntimeError):
    """Another process is training in this run folder."""


class RunLock:
    """Holds ``<run_dir>/.lock`` exclusively from construction until ``release`` (or the process's end); the file
    names the holder's host and pid for the error a second process gets."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a+")
        me = f"pid {os.getpid()} on {socket.gethostname()}"
        try:
            if fcntl is not None:
                fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "unknown"
            self._handle.close()
            who = ("an earlier Trainer of this process: close() it or let its run() end" if holder == me else
                   f"another process ({holder}); wait for it to end (or stop it) before resuming this run")
            raise RunFolderBusyError(f"{self.path.parent} is being trained by {who}") from None
        except OSError as error:  # a filesystem without flock (Lustre without -o flock, some FUSE or SMB mounts)
            warnings.warn(f"cannot lock {self.path} ({error}): nothing stops a second process from training this "
                          "run folder at the same time", stacklevel=2)
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"{me}\n")
        self._handle.flush()

    def release(self) -> None:
        """Let another process train in the folder (closing the file drops the lock)."""
        if not self._handle.closed:
            self._handle.close()
