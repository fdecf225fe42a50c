"""What ``ragzip bench`` records of the machine and the process: resident memory sampled while a method runs, load."""

from __future__ import annotations

import os
import platform
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ragzip._lazy import require

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no getrusage
    resource = None  # type: ignore[assignment]


def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    try:
        return require("psutil").Process().memory_info().rss / 2**20
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        if resource is None:  # pragma: no cover
            raise
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, not current (kB on Linux)


class RSSSampler:
    """Samples the process RSS every ``interval`` seconds in a daemon thread; ``peak_mb`` is the highest seen."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.start_mb = self.peak_mb = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ragzip-bench-rss")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())


def mean(values: Sequence[float]) -> float:
    """The mean of ``values``; 0.0 when there are none."""
    return float(sum(values) / len(values)) if values else 0.0


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """Platform, Python, CPU count and the versions of the libraries the run imported."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    for module in ("torch", "transformers", "faiss", "llmlingua", "langchain_classic", "llama_index.core"):
        mod = sys.modules.get(module)
        if mod is not None and getattr(mod, "__version__", None):
            info[module.split(".")[0]] = mod.__version__
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return info
