"""The training log (one JSON object per line) and the loss curve drawn from it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragzip._lazy import require
from ragzip.errors import MissingDependencyError

logger = logging.getLogger(__name__)


class TrainLog:
    """``train_log.jsonl``: every logged step, evaluation and the final summary, flushed line by line.

    A fresh run starts the file over; a resumed run (``resume_step``) keeps the rows up to the checkpoint it resumes
    from and drops the later ones, which the interrupted run logged but whose training is lost. In a run of several
    stages whose rows carry ``stage``, ``resume_stage`` names the checkpoint's stage: the rows logged before that
    stage's first row are kept whatever their step, then that stage's rows up to ``resume_step``.

    Example:
        >>> import tempfile
        >>> log = TrainLog(Path(tempfile.mkdtemp()) / "train_log.jsonl")
        >>> log.record(step=1, loss=0.5)["loss"]
        0.5
        >>> [row["step"] for row in TrainLog(log.path, resume_step=0).rows]
        []
        >>> for stage, step in [("a", 1), ("a", 2), ("b", 1), ("b", 2)]:
        ...     _ = log.record(stage=stage, step=step)
        >>> [(r["stage"], r["step"]) for r in TrainLog(log.path, resume_step=1, resume_stage="b").rows]
        [('a', 1), ('a', 2), ('b', 1)]
    """

    def __init__(self, path: str | Path, *, resume_step: int | None = None, resume_stage: str | None = None
                 ) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            rows = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
            first = next((i for i, row in enumerate(rows) if row.get("stage") == resume_stage), len(rows)) \
                if resume_stage is not None else 0
            self.rows = [row for row in rows[:first] if not row.get("done")]
            self.rows += [row for row in rows[first:] if row.get("step", 0) <= resume_step and not row.get("done")
                          and (resume_stage is None or row.get("stage") == resume_stage)]
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
                ylabel: str = "loss", metric: str | None = None, series: Sequence[str] = (),
                stage_titles: Mapping[str, str] | None = None) -> Path | None:
    """Draw the logged ``loss``, ``val_loss`` and ``series`` by step, ``metric`` on a second axis; None without matplotlib.

    Rows that carry ``stage`` (a run of several stages) are drawn one panel per stage, in the order the stages were
    logged, titled by ``stage_titles`` (default: ``title`` and the stage's name).
    """
    try:
        require("matplotlib", extra="train", feature="the loss curve").use("Agg")
        plt = require("matplotlib.pyplot", extra="train", feature="the loss curve")
    except MissingDependencyError as err:
        logger.warning("%s Training goes on without loss.png.", err)
        return None
    rows = log.rows if isinstance(log, TrainLog) else log
    stages = list(dict.fromkeys(row["stage"] for row in rows if row.get("stage") is not None))
    panels = [(f"{title}: {s}" if stage_titles is None else stage_titles.get(s, s),
               [row for row in rows if row.get("stage") == s]) for s in stages] or [(title, list(rows))]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.5), squeeze=False)
    for ax, (name, panel) in zip(axes[0], panels, strict=True):
        _draw(ax, panel, name, ylabel, metric, series)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _draw(ax: Any, rows: Sequence[dict[str, Any]], title: str, ylabel: str, metric: str | None,
          series: Sequence[str]) -> None:
    """One panel: the loss, the held-out loss and ``series`` by step, ``metric`` on a second axis."""
    drawn = False
    for key, label, style in [("loss", "train (logged)", "-"), ("val_loss", "held-out", "o-"),
                              *((key, key, "-") for key in series)]:
        points = _series(rows, key)
        if points:
            ax.plot(*zip(*points, strict=True), style, label=label)
            drawn = True
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    values = _series(rows, metric) if metric else []
    if values and metric:
        twin = ax.twinx()
        twin.plot(*zip(*values, strict=True), "s--", color="tab:green", label=f"held-out {metric}")
        twin.set_ylabel(metric)
        twin.legend(loc="upper right")
    if drawn:
        ax.legend(loc="upper left" if values else "best")


__all__ = ["TrainLog", "plot_losses"]
