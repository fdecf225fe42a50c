"""Errors raised by ragzip. Every message names the problem and the fix."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 4000
"""Longest message a ragzip error carries: a message that repeats a huge value is cut (the head says what is wrong)."""


class RagzipError(Exception):
    """Base class of every error ragzip raises on purpose.

    A message longer than :data:`MAX_MESSAGE_CHARS` is cut in the middle, so no input (a YAML alias bomb, a huge
    passage) can turn an error into megabytes of log.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and len(args[0]) > MAX_MESSAGE_CHARS:
            text = args[0]
            half = MAX_MESSAGE_CHARS // 2
            args = (f"{text[:half]} ...[{len(text) - 2 * half} characters cut]... {text[-half:]}",)
        super().__init__(*args)


class ConfigError(RagzipError, ValueError):
    """A YAML file or config dict is malformed, has an unknown key or a bad value."""


class InputError(RagzipError, ValueError):
    """A query or passage given to ragzip cannot be processed as it is."""


class ModelNotFoundError(RagzipError, FileNotFoundError):
    """A model spec (``embedded:``, HF id or local path) cannot be resolved offline."""


class IndexCorruptError(RagzipError, ValueError):
    """A saved FAISS index or its metadata is unreadable or inconsistent."""


class SoftTokenError(RagzipError, RuntimeError):
    """Soft tokens reached a generator that cannot read them, or do not fit it."""


class MissingDependencyError(RagzipError, ImportError):
    """An optional dependency is not installed; the message gives the pip extra."""


class PluginError(RagzipError, RuntimeError):
    """A compressor plugin broke its contract (e.g. returned the wrong number of results); a bug in the plugin."""


class CancelledBatchError(RagzipError, RuntimeError):
    """A batched call was cancelled (its worker task ended) before it produced this caller's result."""


def check_batch_output(who: object, outputs: object, expected: int) -> list:
    """``outputs`` as a list, or :class:`PluginError` unless it holds exactly ``expected`` results (one per query).

    A plugin that returns fewer results than queries would otherwise make ``zip`` drop questions silently.
    """
    try:
        out = list(outputs)  # type: ignore[call-overload]
    except TypeError:
        raise PluginError(f"{who} returned {type(outputs).__name__} from _compress_batch, not a list of "
                          "CompressedContext; fix the plugin.") from None
    if len(out) != expected:
        raise PluginError(f"{who} returned {len(out)} result(s) for {expected} queries from _compress_batch; each "
                          "query must get exactly one CompressedContext. This is a bug in the plugin.")
    return out
