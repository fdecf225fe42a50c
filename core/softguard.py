"""Which soft-token placeholders in a text are live, and refusing to send live ones to a reader that cannot read them.

Framework-free: the LlamaIndex and LangChain guards call :func:`guard_prompt` on every prompt bound for an LLM other
than ragzip's. A placeholder is *live* when a known :class:`~ragzip.SoftTokenStore` (the process-wide default, or one
registered with :func:`track_store`) would resolve it into vectors; forged or stale ones are plain text.

Example:
    >>> from ragzip.softstore import placeholder
    >>> live_placeholders(f"a document quoting {placeholder('0' * 32)}")  # no store issued it: plain text
    []
"""

from __future__ import annotations

import weakref
from typing import Any

from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore, default_store, has_placeholder, reject_placeholders

__all__ = ["guard_prompt", "live_placeholders", "track_store"]

_STORES: weakref.WeakSet[SoftTokenStore] = weakref.WeakSet()


def track_store(store: SoftTokenStore) -> None:
    """Remember a store that adapters' compressors write to, so the guard can tell live placeholders."""
    _STORES.add(store)


def live_placeholders(text: str) -> list[str]:
    """The placeholders in ``text`` that a known store would resolve into vectors (forged and stale ones excluded)."""
    if not has_placeholder(text):
        return []
    stores = [default_store(), *list(_STORES)]
    return [m.group(0) for m in PLACEHOLDER_RE.finditer(text)
            if any(s.resolve(m.group(1)) is not None for s in stores)]


def guard_prompt(text: str, *, who: Any, strict: bool = False) -> None:
    """Raise :class:`~ragzip.SoftTokenError` when ``text`` would carry soft tokens to an LLM that cannot read them.

    By default only *live* placeholders count (ones a soft compressor just issued): text that merely looks like a
    placeholder, e.g. inside a retrieved document, is plain text and must not let a document break the pipeline.
    ``strict=True`` rejects anything placeholder-shaped.

    Args:
        text: The prompt (or one message of it).
        who: The reader, for the message (e.g. ``"the LangChain chat model ChatOpenAI"``).
        strict: Reject anything placeholder-shaped, live or not.
    """
    if strict or live_placeholders(text):
        reject_placeholders(text, who=who)
