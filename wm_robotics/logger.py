"""Run metrics: ``metrics.csv`` (one header row, a column per metric) and TensorBoard events."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from wm_robotics.atomic import write_text_atomic


class MetricsLogger:
    """Collects ``{name: value}`` rows keyed by the run's clock (env steps online, updates offline); rewrites the
    CSV atomically on flush when its rows changed (a run closed before logging leaves the file as it was).

    Rows from an earlier (resumed) run are read back, so one CSV covers the whole run.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self._events = str(Path(run_dir) / "tensorboard")
        self._rows: list[dict[str, float]] = []
        self._changed = not self.path.exists()  # a new run writes its CSV at the first flush, header and all
        if self.path.exists():
            with self.path.open() as handle:
                self._rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
        self._writer = SummaryWriter(self._events)

    @property
    def rows(self) -> list[dict[str, float]]:
        """Every row so far, earlier (resumed) runs' included, oldest first."""
        return self._rows

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` at clock ``step`` (CSV row and TensorBoard scalars)."""
        self._rows.append({"step": float(step), **{k: float(v) for k, v in metrics.items()}})
        self._changed = True
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)

    def drop_after(self, step: int) -> None:
        """Forget rows past ``step`` (a resumed run replays from its checkpoint's step), in TensorBoard too."""
        kept = [row for row in self._rows if row["step"] <= step]
        self._changed |= len(kept) != len(self._rows)
        self._rows = kept
        self._writer.close()
        self._writer = SummaryWriter(self._events, purge_step=int(step) + 1)

    def flush(self) -> None:
        """Write every row to ``metrics.csv`` (columns: step, then metric names sorted) if any changed."""
        self._writer.flush()
        if not self._changed:
            return
        self._changed = False
        columns = ["step"] + sorted({key for row in self._rows for key in row} - {"step"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for row in self._rows:
            writer.writerow({key: _csv_value(value) for key, value in row.items()})
        write_text_atomic(self.path, buffer.getvalue())

    def close(self) -> None:
        """Flush, then close the TensorBoard writer."""
        self.flush()
        self._writer.close()


def _csv_value(value: float) -> str:
    """A whole number in full (steps, update counters), any other value to 6 significant digits."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else f"{value:.6g}"
