"""``torch.compile`` with a way out: a call compiled at its first use that runs eagerly, after one warning, when
the compiler cannot build it (no C++ compiler on the CPU, an inductor failure)."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch


class CompiledCall:
    """``fn`` through ``torch.compile(fn, dynamic=False)``, compiled at the first call.

    If inductor fails (``BackendCompilerFailed``) it warns once, naming ``what`` failed and the first lines of
    the cause, and from then on calls ``fn`` eagerly (``active`` turns False). An error of ``fn`` itself
    raised while it is traced propagates: the eager call would raise it too. Only the call is guarded: the
    backward of a compiled forward is compiled at its first ``backward()``, where a failure of inductor
    alone (the forward having compiled, so a C++ compiler is there) would raise.
    """

    def __init__(self, fn: Callable, what: str, then: str) -> None:
        self.fn, self.what, self.then = fn, what, then
        self.active = True
        self._compiled: Callable | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, compiled on the first call; eager once inductor has failed."""
        if not self.active:
            return self.fn(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=False)
        try:
            return self._compiled(*args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = " ".join(lines[:2])[:300] or type(error).__name__  # e.g. "backend='inductor' raised: <cause>"
            warnings.warn(f"torch.compile of {self.what} failed ({reason}); {self.then}")
            self.active, self._compiled = False, None
            return self.fn(*args, **kwargs)
