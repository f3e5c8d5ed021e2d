"""Checks of user settings shared by the envs, the scripts and the library (no torch import: the simulator worker
processes use them too)."""

from __future__ import annotations

import numbers


def positive_int(name: str, value: object, accepted: str = "") -> int:
    """``value`` as an int; a ValueError naming ``name`` unless it is a positive integer (Python or NumPy, not a
    bool). ``accepted`` adds what else the caller takes to the message, e.g. ``" or None"``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer{accepted}, got {value!r}")
    return int(value)
