"""The training log (one JSON object per line) and the loss curve drawn from it."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class TrainLog:
    """``train_log.jsonl``: every logged step, evaluation and the final summary, flushed line by line.

    A fresh run starts the file over; a resumed run (``resume_step``) keeps the rows up to the checkpoint it resumes
    from and drops the later ones, which the interrupted run logged but whose training is lost.

    Example:
        >>> import tempfile
        >>> log = TrainLog(Path(tempfile.mkdtemp()) / "train_log.jsonl")
        >>> log.record(step=1, loss=0.5)["loss"]
        0.5
        >>> [row["step"] for row in TrainLog(log.path, resume_step=0).rows]
        []
    """

    def __init__(self, path: str | Path, *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line) if line.strip() else None
                if row is not None and row.get("step", 0) <= resume_step and not row.get("done"):
                    self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(row) + "\n" for row in self.rows), encoding="utf-8")

    def record(self, **fields: Any) -> dict[str, Any]:
        """Append one row and flush it to disk; returns the row."""
        self.rows.append(fields)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(fields) + "\n")
        return fields

    def series(self, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` of the rows that hold a number under ``key``."""
        return _series(self.rows, key)


def _series(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(row["step"], row[key]) for row in rows
            if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool) and "step" in row]


def plot_losses(log: TrainLog | Sequence[dict[str, Any]], path: str | Path, *, title: str = "training loss",
                ylabel: str = "loss", metric: str | None = None) -> Path | None:
    """Draw the logged ``loss`` (and ``val_loss``) by step, and ``metric`` on a second axis; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no loss curve (pip install 'ragzip[train]')")
        return None
    rows = log.rows if isinstance(log, TrainLog) else log
    train, val = _series(rows, "loss"), _series(rows, "val_loss")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train (logged)")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="held-out")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    values = _series(rows, metric) if metric else []
    if values and metric:
        twin = ax.twinx()
        twin.plot(*zip(*values, strict=True), "s--", color="tab:green", label=f"held-out {metric}")
        twin.set_ylabel(metric)
        twin.legend(loc="upper right")
    if train or val:
        ax.legend(loc="upper left" if values else "best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


__all__ = ["TrainLog", "plot_losses"]
