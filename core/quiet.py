"""Quiet by default: dependencies' warnings and progress bars stay out of answers.

Loading a model through ``transformers`` prints "Loading weights" progress bars, and a decoding step may raise a
``FutureWarning`` about an argument the library will rename. None of it is actionable for someone asking a question,
so :func:`quiet_dependencies` wraps the user-facing calls (``RAGPipeline``, ``Compressor.compress``, the LlamaIndex and
LangChain adapters, ``ragzip ask``): while it is active, ``transformers`` and ``huggingface_hub`` log errors only and
show no progress bars, and warnings raised inside dependencies are logged at DEBUG on the ``ragzip.quiet`` logger
instead of printed. ragzip's own warnings still show. Long work (indexing, training, the bench) keeps its tqdm bars.

Set the ``ragzip`` logger to DEBUG (``ragzip -vv ...``, or ``logging.getLogger("ragzip").setLevel(logging.DEBUG)``) or
``RAGZIP_VERBOSE=1`` to see everything the dependencies print.

The context manager is re-entrant and thread-safe: the first caller in saves the global state, the last one out
restores it, so concurrent requests (the adapters' worker threads) never see a half-restored state.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["quiet_dependencies"]

logger = logging.getLogger("ragzip.quiet")

_lock = threading.Lock()
_depth = 0
_restore: list[Callable[[], None]] = []
# ragzip's own source folders: the package itself (a wheel: .../ragzip) and, in a source checkout, its siblings.
_HERE = Path(__file__).resolve().parent
_ROOTS = (str(_HERE), *(str(_HERE.parent / name) for name in ("plugins", "integrations")))


def _verbose() -> bool:
    return os.environ.get("RAGZIP_VERBOSE", "") not in ("", "0") or logging.getLogger("ragzip").isEnabledFor(
        logging.DEBUG)


def _ours(filename: str) -> bool:
    """True for a warning raised in ragzip's own code (it shows); False for a dependency's (it is logged)."""
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    return path.startswith(_ROOTS)


def _silence() -> list[Callable[[], None]]:
    """Switch the dependencies to quiet; return the functions that undo it, in reverse order."""
    undo: list[Callable[[], None]] = []
    shown = warnings.showwarning

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                    line: str | None = None) -> None:
        if _ours(filename):
            shown(message, category, filename, lineno, file, line)
        else:
            logger.debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)

    warnings.showwarning = showwarning
    undo.append(lambda: setattr(warnings, "showwarning", shown))

    if "transformers" in sys.modules or importlib.util.find_spec("transformers") is not None:
        hf_logging = importlib.import_module("transformers.utils.logging")
        verbosity = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        undo.append(lambda: hf_logging.set_verbosity(verbosity))
        if bars:
            undo.append(hf_logging.enable_progress_bar)
    if "huggingface_hub" in sys.modules or importlib.util.find_spec("huggingface_hub") is not None:
        hub = importlib.import_module("huggingface_hub.utils")
        if not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            undo.append(hub.enable_progress_bars)
    return undo


@contextlib.contextmanager
def quiet_dependencies() -> Iterator[None]:
    """Silence dependencies' warnings (logged at DEBUG) and progress bars for the duration of the block.

    Example:
        >>> from ragzip.quiet import quiet_dependencies
        >>> with quiet_dependencies():
        ...     pass  # load models, answer questions: no progress bars, no FutureWarnings
    """
    global _depth, _restore
    with _lock:
        if _depth == 0 and not _verbose():
            _restore = _silence()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for undo in reversed(_restore):
                    undo()
                _restore = []
