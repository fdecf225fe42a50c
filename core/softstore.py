"""Soft tokens travel through text frameworks as opaque placeholders that only ragzip's generator resolves.

A soft compressor (xRAG, REFRAG) puts its vectors into a :class:`SoftTokenStore` and writes the placeholder the store
issues into the passage text. ragzip's generator splits a prompt at placeholders and splices the stored vectors into
``inputs_embeds``. Handles are 128 random bits, so text that merely looks like a placeholder (in a document, a query, a
stale handle from an evicted entry) is never resolved: it stays plain text.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from ragzip.errors import SoftTokenError

PLACEHOLDER_RE = re.compile(r"<<ragzip:soft:([0-9a-f]{32})>>")


def placeholder(handle: str) -> str:
    return f"<<ragzip:soft:{handle}>>"


def has_placeholder(text: str) -> bool:
    """True when ``text`` contains something shaped like a ragzip placeholder (live or not)."""
    return PLACEHOLDER_RE.search(text) is not None


@dataclass(frozen=True)
class SoftEntry:
    """Vectors ``(n, d)`` in the input-embedding space of the generator named by ``space``."""

    vectors: torch.Tensor
    space: str

    @property
    def nbytes(self) -> int:
        return self.vectors.element_size() * self.vectors.nelement()


class SoftTokenStore:
    """A bounded, thread-safe, least-recently-used store of soft-token vectors keyed by unguessable handles.

    Args:
        max_bytes: Capacity; the least recently used entries are evicted to stay under it.

    Example:
        >>> store = SoftTokenStore(max_bytes=1 << 20)
        >>> text = store.put(torch.zeros(1, 4), space="toy")
        >>> store.resolve(PLACEHOLDER_RE.search(text).group(1)).vectors.shape
        torch.Size([1, 4])
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}.")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, SoftEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, vectors: torch.Tensor, *, space: str) -> str:
        """Store ``vectors`` (``(n, d)`` or ``(d,)``) and return the placeholder text that stands for them."""
        vectors = vectors.detach().to("cpu", torch.float32).clone()
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise SoftTokenError(f"soft tokens must have shape (n, d) with n >= 1, got {tuple(vectors.shape)}.")
        if not torch.isfinite(vectors).all():
            raise SoftTokenError("soft tokens contain NaN or inf; check the embeddings fed to the compressor.")
        entry = SoftEntry(vectors.contiguous(), space)
        if entry.nbytes > self.max_bytes:
            raise SoftTokenError(f"soft tokens of {entry.nbytes} bytes exceed the store's max_bytes={self.max_bytes}; "
                                 "raise `max_bytes` when building the SoftTokenStore.")
        handle = secrets.token_hex(16)
        with self._lock:
            self._entries[handle] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.nbytes
        return placeholder(handle)

    def resolve(self, handle: str) -> SoftEntry | None:
        """The entry for ``handle``, or None when unknown or evicted (the placeholder then stays text)."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is not None:
                self._entries.move_to_end(handle)
            return entry

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def split_prompt(text: str, store: SoftTokenStore | None) -> list[str | SoftEntry]:
    """Split ``text`` at live placeholders; forged, stale or unknown ones stay in the text pieces."""
    pieces: list[str | SoftEntry] = []
    pos = 0
    buffer = ""
    for match in PLACEHOLDER_RE.finditer(text):
        entry = store.resolve(match.group(1)) if store is not None else None
        if entry is None:
            continue
        buffer += text[pos:match.start()]
        if buffer:
            pieces.append(buffer)
        buffer = ""
        pieces.append(entry)
        pos = match.end()
    buffer += text[pos:]
    if buffer:
        pieces.append(buffer)
    return pieces


_default_store: SoftTokenStore | None = None
_default_lock = threading.Lock()


def default_store() -> SoftTokenStore:
    """The process-wide store shared by compressors and generators that were not given one."""
    global _default_store
    with _default_lock:
        if _default_store is None:
            _default_store = SoftTokenStore()
        return _default_store


def reject_placeholders(text: str, *, who: Any) -> None:
    """For generators that cannot read soft tokens: fail loudly instead of sending garbage to a remote model."""
    if has_placeholder(text):
        raise SoftTokenError(
            f"the prompt for {who} contains ragzip soft-token placeholders, which only ragzip's own generator "
            "(ragzip.HFGenerator, or its LlamaIndex/LangChain wrappers) can read. Use a text compressor "
            "(extractive, abstractive, truncate) with this LLM, or generate with ragzip's generator."
        )
