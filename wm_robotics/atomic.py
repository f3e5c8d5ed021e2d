"""Atomic files: written to a temp file beside the target, flushed to disk, then renamed over it (the folder
flushed too), so a reader, a killed run or a crashed machine finds the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

UMASK = os.umask(0o022)  # reading the umask sets it: set it straight back
os.umask(UMASK)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temp file beside ``path`` (``.<name>-XXXX.tmp``, so concurrent writers never
    share one), fsync it and rename it over ``path``; the temp file is removed if ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes the file 0600: give it a plain file's mode
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries to disk, so a rename into it survives a crash of the machine (where the system
    allows a folder to be opened and synced; others keep it in their cache)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda handle: handle.write(text.encode()))


def report_json_path(out: str | os.PathLike) -> Path:
    """``out`` as the path of a JSON report whose markdown goes beside it (``.md``): refused if it is that ``.md``
    itself, which would overwrite the JSON."""
    out = Path(out)
    if out.suffix == ".md":
        raise ValueError(f"{out} is the JSON report's path and its markdown goes beside it: give a .json path")
    return out


def write_json_and_markdown(out: str | os.PathLike, data: dict, markdown: str) -> list[Path]:
    """``data`` as JSON at ``out`` and ``markdown`` beside it (``out`` with ``.md``), both atomically."""
    out = report_json_path(out)
    return [write_text_atomic(out, json.dumps(data, indent=2)), write_text_atomic(out.with_suffix(".md"), markdown)]
