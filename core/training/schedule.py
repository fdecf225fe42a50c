"""Learning-rate schedules and the time/step budget that drives them.

A schedule maps ``(step, total, progress)`` to a factor of each parameter group's peak learning rate: ``step`` is the
number of optimizer steps already taken, ``total`` the steps planned and ``progress`` the share of the budget used,
the larger of ``step / total`` and the share of the time budget spent (so a run cut short by its time budget, on a
busy shared CPU, still finishes its decay).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol


class Schedule(Protocol):
    """A learning-rate factor for the next optimizer step."""

    def __call__(self, step: int, total: int, progress: float) -> float:
        """The factor of the peak learning rate for step ``step`` of ``total``, ``progress`` of the budget used."""
        ...


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up over the first ``warmup`` share of training, then cosine decay to ``final`` x the peak.

    Follows ``progress`` (steps or time, whichever is further along). During the warm-up the factor is at least
    ``floor``, so the first step is not wasted.

    Example:
        >>> s = WarmupCosine(warmup=0.1, final=0.1)
        >>> [round(s(0, 100, p), 3) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
        [0.02, 0.5, 1.0, 0.55, 0.1]
    """

    warmup: float = 0.1
    final: float = 0.1
    floor: float = 0.02

    def __call__(self, step: int, total: int, progress: float) -> float:
        """The factor at ``progress``."""
        if progress < self.warmup:
            return max(progress / self.warmup, self.floor)
        rest = min((progress - self.warmup) / max(1 - self.warmup, 1e-9), 1.0)
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * rest))


@dataclass(frozen=True)
class WarmupLinear:
    """Linear warm-up over ``max(1, int(warmup * total))`` steps, then linear decay to 0 at ``total``; by steps only.

    The factor of step ``s`` (0-based) is ``min((s + 1) / w, (total - s) / (total - w))``: the first step already
    trains at ``1 / w`` of the peak.

    Example:
        >>> s = WarmupLinear(warmup=0.25)
        >>> [s(k, 8, k / 8) for k in range(8)]
        [0.5, 1.0, 1.0, 0.8333333333333334, 0.6666666666666666, 0.5, 0.3333333333333333, 0.16666666666666666]
    """

    warmup: float = 0.06

    def __call__(self, step: int, total: int, progress: float) -> float:
        """The factor of step ``step`` of ``total``."""
        warm = max(1, int(self.warmup * total))
        return min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm)))


def make_schedule(args: Any) -> Schedule:
    """The schedule ``args.schedule`` names, with ``args.warmup``: ``cosine`` (to 10%) or ``linear`` (to 0)."""
    if args.schedule == "linear":
        return WarmupLinear(args.warmup)
    return WarmupCosine(args.warmup)


class Budget:
    """A wall-clock (or CPU-time) budget of ``seconds``; ``spent`` seconds count as already used.

    ``clock="cpu"`` counts this process's CPU seconds divided by ``threads``: the time it actually ran, which a
    shared machine that pauses or starves it does not eat into. Time spent inside :meth:`paused` (held-out checks,
    checkpoints) does not count.

    Example:
        >>> b = Budget(60.0, spent=30.0)
        >>> b.progress(step=1, total=10) >= 0.5, b.exhausted()
        (True, False)
    """

    def __init__(self, seconds: float, *, clock: Literal["wall", "cpu"] = "wall", threads: int = 1,
                 spent: float = 0.0) -> None:
        self.seconds = seconds
        self.clock = clock
        self.threads = max(threads, 1)
        self.spent = spent
        self._start = self.now()
        self._paused_at: float | None = None

    def now(self) -> float:
        """The budget's clock, in seconds."""
        return time.process_time() / self.threads if self.clock == "cpu" else time.perf_counter()

    def start(self, spent: float | None = None) -> None:
        """Start counting from now (with ``spent`` seconds already used, when given)."""
        if spent is not None:
            self.spent = spent
        self._start = self.now()

    def elapsed(self) -> float:
        """Seconds used: ``spent`` plus the time since :meth:`start`, less the time paused."""
        now = self._paused_at if self._paused_at is not None else self.now()
        return self.spent + (now - self._start)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The budget stands still inside this block (nested blocks pause once).

        Example:
            >>> b = Budget(60.0)
            >>> with b.paused():
            ...     before = b.elapsed()
            ...     time.sleep(0.01)
            ...     b.elapsed() == before
            True
        """
        if self._paused_at is not None:
            yield
            return
        self._paused_at = self.now()
        try:
            yield
        finally:
            self._start += self.now() - self._paused_at
            self._paused_at = None

    def progress(self, step: int, total: int) -> float:
        """The larger of the step share and the time share used."""
        return max(step / max(total, 1), self.elapsed() / max(self.seconds, 1e-9))

    def exhausted(self) -> bool:
        """Whether more than ``seconds`` were used."""
        return self.elapsed() > self.seconds


__all__ = ["Budget", "Schedule", "WarmupCosine", "WarmupLinear", "make_schedule"]
