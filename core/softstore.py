"""Soft tokens travel through text frameworks as opaque placeholders that only ragzip's generator resolves.

A soft compressor (xRAG, REFRAG) puts its vectors into a :class:`SoftTokenStore` and writes the placeholder the store
issues into the passage text. ragzip's generator splits a prompt at placeholders and splices the stored vectors into
``inputs_embeds``. Handles are 128 random bits, so text that merely looks like a placeholder (in a document, a query)
is never resolved: it stays plain text.

Lifetime of an entry (why: a placeholder that loses its vectors before generation would reach the model as text):

* ``put`` pins the entry: pinned entries are never evicted, so one request cannot push out another's vectors, nor its
  own. A request that cannot fit beside the pinned entries waits up to ``wait_s`` for other requests to finish, then
  raises :class:`~ragzip.SoftTokenError` naming ``max_bytes``.
* The generator releases what it has read (``release``), which frees the entry; the owner of a context that is never
  generated from releases it the same way. A pin that nobody releases expires after ``pin_ttl_s``, after which the
  entry may be evicted like any unpinned one, so an abandoned request cannot fill a long-running server's store.
* A handle that was freed or evicted is remembered (a bounded set), so a prompt that still carries it fails loudly in
  ragzip's generator instead of sending the placeholder to the model as text.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ragzip.errors import SoftTokenError
from ragzip.types import SoftSegment

logger = logging.getLogger(__name__)

PLACEHOLDER_RE = re.compile(r"<<ragzip:soft:([0-9a-f]{32})>>")
STORE_BYTES_ENV = "RAGZIP_SOFT_STORE_BYTES"
"""Environment variable that sizes the process-wide default store (bytes)."""


def placeholder(handle: str) -> str:
    """The text that stands for the store entry ``handle`` in a prompt (``<<ragzip:soft:<handle>>>``)."""
    return f"<<ragzip:soft:{handle}>>"


def has_placeholder(text: str) -> bool:
    """True when ``text`` contains something shaped like a ragzip placeholder (live or not)."""
    return PLACEHOLDER_RE.search(text) is not None


def handles_of(items: Any) -> list[str]:
    """The soft-token handles that ``items`` names, in order.

    Args:
        items: A handle, a text holding placeholders, a :class:`~ragzip.types.SoftSegment`, a
            :class:`~ragzip.CompressedContext` (its ``soft`` segments), an iterable of those, or ``None`` (no handles).

    Raises:
        TypeError: ``items`` is none of these.
    """
    if items is None:
        return []
    if isinstance(items, str):
        found = PLACEHOLDER_RE.findall(items)
        return found if found else ([items] if re.fullmatch(r"[0-9a-f]{32}", items) else [])
    handle = getattr(items, "handle", None)
    if isinstance(handle, str):
        return [handle]
    soft = getattr(items, "soft", None)
    if soft is not None and not isinstance(items, (list, tuple, set, frozenset)):
        return [s.handle for s in soft]
    if isinstance(items, Iterable):
        return [h for item in items for h in handles_of(item)]
    raise TypeError(f"cannot find soft-token handles in {type(items).__name__}")


@dataclass(frozen=True)
class SoftEntry:
    """Vectors ``(n, d)`` in the input-embedding space of the generator named by ``space``.

    ``pad`` says whether the placeholder was written with one separating space before / after it that is not content
    (REFRAG separates its placeholders from neighbouring text so that text splitters cut around them, never through
    them); :func:`split_prompt` drops that space, so the generator reads exactly what it would read without it.
    """

    vectors: torch.Tensor
    space: str
    pad: tuple[bool, bool] = (False, False)

    @property
    def nbytes(self) -> int:
        """The bytes the vectors take (what counts against the store's ``max_bytes``)."""
        return self.vectors.element_size() * self.vectors.nelement()


class SoftTokenStore:
    """A bounded, thread-safe store of soft-token vectors keyed by unguessable handles, with pinning.

    Entries are pinned from :meth:`put` until :meth:`release` (the generator releases what it reads); only unpinned
    entries are evicted, least recently used first, to stay under ``max_bytes``.

    Args:
        max_bytes: Capacity in bytes (the size setting named in "store full" errors). The process-wide default store
            reads it from the ``RAGZIP_SOFT_STORE_BYTES`` environment variable (256 MiB when unset).
        pin_ttl_s: A pin that is not released within this many seconds expires (its entry becomes evictable); this
            bounds what an abandoned request (compressed, never generated) can hold.
        wait_s: How long a ``put`` that does not fit beside the pinned entries waits for other requests to release
            theirs before raising.

    Example:
        >>> store = SoftTokenStore(max_bytes=1 << 20)
        >>> text = store.put(torch.zeros(1, 4), space="toy")
        >>> store.resolve(PLACEHOLDER_RE.search(text).group(1)).vectors.shape
        torch.Size([1, 4])
        >>> store.release(text), len(store)
        (1, 0)
    """

    _MAX_TOMBSTONES = 1 << 16

    def __init__(self, max_bytes: int = 256 << 20, *, pin_ttl_s: float = 600.0, wait_s: float = 5.0) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}.")
        if not pin_ttl_s > 0:
            raise ValueError(f"pin_ttl_s must be positive, got {pin_ttl_s!r}.")
        if not wait_s >= 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s!r}.")
        self.max_bytes = max_bytes
        self.pin_ttl_s = float(pin_ttl_s)
        self.wait_s = float(wait_s)
        self._entries: OrderedDict[str, SoftEntry] = OrderedDict()
        self._pins: dict[str, tuple[int, float]] = {}  # handle -> (pin count, deadline on the monotonic clock)
        self._gone: OrderedDict[str, str] = OrderedDict()  # freed/evicted handle -> "released" | "evicted"
        self._bytes = 0
        self._peak = 0
        self._cond = threading.Condition(threading.Lock())

    # ------------------------------------------------------------------------------------------------------- write
    def put(self, vectors: torch.Tensor, *, space: str, pin: bool = True,
            pad: tuple[bool, bool] = (False, False)) -> str:
        """Store ``vectors`` (``(n, d)`` or ``(d,)``) and return the placeholder text that stands for them.

        The entry is pinned (never evicted) until :meth:`release` unless ``pin=False``. ``pad`` (before, after): the
        caller writes one separating space on that side of the placeholder, which the generator will not read.
        """
        return self.put_many([vectors], space=space, pin=pin, pad=pad)[0]

    def put_many(self, vectors: Iterable[torch.Tensor], *, space: str, pin: bool = True,
                 pad: tuple[bool, bool] = (False, False)) -> list[str]:
        """Store several entries at once: all of them or none (a request that cannot fit leaves nothing behind).

        Raises:
            SoftTokenError: bad vectors, or the entries do not fit beside the pinned ones within ``wait_s``.
        """
        return [s.placeholder for s in self.put_segments(vectors, space=space, pin=pin, pad=pad)]

    def put_segments(self, vectors: Iterable[torch.Tensor], *, space: str, pin: bool = True,
                     pad: tuple[bool, bool] = (False, False)) -> list[SoftSegment]:
        """:meth:`put_many`, returning each entry as a :class:`~ragzip.types.SoftSegment`.

        A segment holds the handle, the placeholder and the number of vectors: what a soft compressor records in its
        results.
        """
        return self._put_many(vectors, space=space, pin=pin, held=0, pad=pad)

    def _put_many(self, vectors: Iterable[torch.Tensor], *, space: str, pin: bool, held: int,
                  pad: tuple[bool, bool] = (False, False)) -> list[SoftSegment]:
        pad = (bool(pad[0]), bool(pad[1]))
        entries = [SoftEntry(_checked(v), space, pad) for v in vectors]
        need = sum(e.nbytes for e in entries)
        if need + held > self.max_bytes:  # no amount of waiting frees the request's own pinned entries
            raise SoftTokenError(
                f"soft tokens of {need + held} bytes exceed the store's max_bytes={self.max_bytes}; raise `max_bytes` when "
                f"building the SoftTokenStore (or {STORE_BYTES_ENV} for the default store), or compress fewer "
                "passages per request.")
        handles = [secrets.token_hex(16) for _ in entries]
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while not self._make_room(need):
                left = deadline - time.monotonic()
                if left <= 0:
                    pinned = self._pinned_bytes()
                    raise SoftTokenError(
                        f"the SoftTokenStore is full: {need} bytes of soft tokens do not fit beside {pinned} bytes "
                        f"pinned by requests not yet generated (max_bytes={self.max_bytes}, waited {self.wait_s:g} s). "
                        f"Raise `max_bytes` (SoftTokenStore(max_bytes=...), or {STORE_BYTES_ENV} for the default "
                        "store), generate from compressed contexts before compressing more, or release contexts "
                        "you will not generate from with `store.release(ctx)`.")
                self._cond.wait(timeout=min(left, 0.05))
            now = time.monotonic()
            for handle, entry in zip(handles, entries, strict=True):
                self._entries[handle] = entry
                self._bytes += entry.nbytes
                if pin:
                    self._pins[handle] = (1, now + self.pin_ttl_s)
            self._peak = max(self._peak, self._bytes)
        return [SoftSegment(h, placeholder(h), int(e.vectors.shape[0])) for h, e in zip(handles, entries, strict=True)]

    def _make_room(self, need: int) -> bool:
        """Evict unpinned entries (LRU first) until ``need`` more bytes fit; False when pinned entries block it."""
        if self._bytes + need <= self.max_bytes:
            return True
        now = time.monotonic()
        for handle in list(self._entries):
            if self._bytes + need <= self.max_bytes:
                break
            pin = self._pins.get(handle)
            if pin is not None:
                if pin[1] > now:
                    continue
                logger.warning("soft-token entry %s… was pinned for more than pin_ttl_s=%g s without being "
                               "released; evicting it (was its context never generated from?)", handle[:8],
                               self.pin_ttl_s)
                del self._pins[handle]
            self._drop(handle, "evicted")
        return self._bytes + need <= self.max_bytes

    def _drop(self, handle: str, why: str) -> None:
        entry = self._entries.pop(handle)
        self._bytes -= entry.nbytes
        self._pins.pop(handle, None)
        self._gone[handle] = why
        while len(self._gone) > self._MAX_TOMBSTONES:
            self._gone.popitem(last=False)

    def request(self) -> SoftRequest:
        """A context manager for one request's entries: ``with store.request() as req: req.put(...)``.

        A request whose entries together exceed ``max_bytes`` fails at once (its own pinned entries can never make
        room for it), and a request that fails releases every entry it put, so nothing stays pinned behind it.
        """
        return SoftRequest(self)

    def pin(self, items: Any) -> int:
        """Pin the entries named by ``items`` once more (each needs one more :meth:`release`); returns how many."""
        n = 0
        with self._cond:
            deadline = time.monotonic() + self.pin_ttl_s
            for handle in handles_of(items):
                if handle in self._entries:
                    count = self._pins.get(handle, (0, 0.0))[0]
                    self._pins[handle] = (count + 1, deadline)
                    n += 1
        return n

    def release(self, items: Any) -> int:
        """Release the entries named by ``items`` (handles, placeholders, segments or a CompressedContext).

        An entry whose last pin is released is freed. Unknown and already freed handles are ignored, so releasing
        twice is harmless. Returns the number of entries freed.
        """
        freed = 0
        with self._cond:
            for handle in handles_of(items):
                if handle not in self._entries:
                    continue
                count = self._pins.get(handle, (1, 0.0))[0] - 1
                if count > 0:
                    self._pins[handle] = (count, self._pins[handle][1])
                    continue
                self._drop(handle, "released")
                freed += 1
            if freed:
                self._cond.notify_all()
        return freed

    # -------------------------------------------------------------------------------------------------------- read
    def resolve(self, handle: str) -> SoftEntry | None:
        """The entry for ``handle``, or None when unknown, freed or evicted."""
        with self._cond:
            entry = self._entries.get(handle)
            if entry is not None:
                self._entries.move_to_end(handle)
            return entry

    def gone(self, handle: str) -> str | None:
        """``"released"`` or ``"evicted"`` when this store issued ``handle`` and no longer holds it, else None."""
        with self._cond:
            return self._gone.get(handle)

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        """The bytes held now, pinned or not."""
        with self._cond:
            return self._bytes

    @property
    def peak_bytes(self) -> int:
        """The most bytes held at once since the store was made (never above ``max_bytes``)."""
        with self._cond:
            return self._peak

    def _pinned_bytes(self) -> int:
        now = time.monotonic()
        return sum(self._entries[h].nbytes for h, (_, until) in self._pins.items() if until > now)

    @property
    def pinned(self) -> int:
        """How many entries are pinned now (live pins; expired ones are not counted)."""
        now = time.monotonic()
        with self._cond:
            return sum(1 for _, until in self._pins.values() if until > now)

    def clear(self) -> None:
        """Free every entry, pinned or not; a prompt still holding one of their placeholders then fails loudly."""
        with self._cond:
            for handle in list(self._entries):
                self._drop(handle, "released")
            self._cond.notify_all()


class SoftRequest:
    """The entries one request puts into a :class:`SoftTokenStore` (see :meth:`SoftTokenStore.request`).

    Used as a context manager: when the block raises, every entry the request put is released.

    Args:
        store: The store the entries go into.
    """

    def __init__(self, store: SoftTokenStore) -> None:
        self.store = store
        self.handles: list[str] = []
        self.nbytes = 0

    def put(self, vectors: torch.Tensor, *, space: str, pad: tuple[bool, bool] = (False, False)) -> str:
        """:meth:`SoftTokenStore.put` (always pinned), recorded as part of this request."""
        return self.put_many([vectors], space=space, pad=pad)[0]

    def put_many(self, vectors: Iterable[torch.Tensor], *, space: str,
                 pad: tuple[bool, bool] = (False, False)) -> list[str]:
        """:meth:`SoftTokenStore.put_many` (always pinned), recorded as part of this request."""
        return [s.placeholder for s in self.put_segments(vectors, space=space, pad=pad)]

    def put_segments(self, vectors: Iterable[torch.Tensor], *, space: str,
                     pad: tuple[bool, bool] = (False, False)) -> list[SoftSegment]:
        """:meth:`SoftTokenStore.put_segments` (always pinned), recorded as part of this request.

        Raises:
            SoftTokenError: bad vectors; the request's entries together exceed the store's ``max_bytes``; or they do
                not fit beside other requests' pinned entries within ``wait_s``.
        """
        vectors = list(vectors)
        segments = self.store._put_many(vectors, space=space, pin=True, held=self.nbytes, pad=pad)
        self.handles.extend(s.handle for s in segments)
        self.nbytes += sum(4 * (v.nelement()) for v in vectors)  # stored as float32
        return segments

    def __enter__(self) -> SoftRequest:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.store.release(self.handles)


def _checked(vectors: torch.Tensor) -> torch.Tensor:
    if not isinstance(vectors, torch.Tensor):
        raise SoftTokenError(f"soft tokens must be a torch.Tensor, got {type(vectors).__name__}.")
    vectors = vectors.detach().to("cpu", torch.float32).clone()
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise SoftTokenError(f"soft tokens must have shape (n, d) with n >= 1, got {tuple(vectors.shape)}.")
    if not torch.isfinite(vectors).all():
        raise SoftTokenError("soft tokens contain NaN or inf; check the embeddings fed to the compressor.")
    return vectors.contiguous()


def split_prompt(text: str, store: SoftTokenStore | None, *, strict: bool = False,
                 read: list[str] | None = None) -> list[str | SoftEntry]:
    """Split ``text`` at live placeholders; forged and unknown ones stay in the text pieces.

    A live placeholder written with separating spaces (``SoftEntry.pad``) takes one adjacent space on each padded side
    with it; where a text splitter trimmed that space at a chunk edge there is none to take.

    Args:
        text: The prompt.
        store: Where handles resolve.
        strict: Raise :class:`~ragzip.SoftTokenError` for a placeholder this store issued but no longer holds (freed
            after an earlier generation, or evicted), instead of leaving it as text. ragzip's generator sets it: such
            a placeholder would otherwise reach the model as plain text, silently. A forged handle is never one the
            store issued, so it stays text either way.
        read: When given, the handles resolved are appended to it (the generator releases them afterwards).
    """
    pieces: list[str | SoftEntry] = []
    pos = 0
    buffer = ""
    for match in PLACEHOLDER_RE.finditer(text):
        handle = match.group(1)
        entry = store.resolve(handle) if store is not None else None
        if entry is None:
            why = store.gone(handle) if (strict and store is not None) else None
            if why is not None:
                raise SoftTokenError(
                    f"the prompt holds the soft-token placeholder {handle[:8]}… whose vectors were {why} before this "
                    "generation, so it cannot be read as soft tokens. "
                    + ("A compressed context is read once: its vectors are freed after generation. Compress again "
                       "for another generation (or pin it with `store.pin(ctx)`, one pin per extra read)."
                       if why == "released" else
                       "Raise the SoftTokenStore's `max_bytes` (RAGZIP_SOFT_STORE_BYTES for the default store), or "
                       "generate sooner after compressing."))
            continue
        if read is not None:
            read.append(handle)
        buffer += text[pos:match.start()]
        if entry.pad[0] and buffer.endswith(" "):
            buffer = buffer[:-1]
        if buffer:
            pieces.append(buffer)
        buffer = ""
        pieces.append(entry)
        pos = match.end()
        if entry.pad[1] and text.startswith(" ", pos):
            pos += 1
    buffer += text[pos:]
    if buffer:
        pieces.append(buffer)
    return pieces


_default_store: SoftTokenStore | None = None
_default_lock = threading.Lock()


def default_store() -> SoftTokenStore:
    """The process-wide store shared by compressors and generators that were not given one.

    Its size comes from ``RAGZIP_SOFT_STORE_BYTES`` (bytes) when set, else 256 MiB.
    """
    global _default_store
    with _default_lock:
        if _default_store is None:
            raw = os.environ.get(STORE_BYTES_ENV, "").strip()
            size = 256 << 20
            if raw:
                try:
                    size = int(raw)
                except ValueError:
                    raise SoftTokenError(f"{STORE_BYTES_ENV}={raw[:40]!r} is not a whole number of bytes; set it "
                                         "to e.g. 268435456 (256 MiB), or unset it.") from None
                if size <= 0:
                    raise SoftTokenError(f"{STORE_BYTES_ENV}={raw[:40]!r} must be a positive number of bytes.")
            _default_store = SoftTokenStore(max_bytes=size)
        return _default_store


def reject_placeholders(text: str, *, who: Any) -> None:
    """For generators that cannot read soft tokens: fail loudly instead of sending garbage to a remote model."""
    if has_placeholder(text):
        raise SoftTokenError(
            f"the prompt for {who} contains ragzip soft-token placeholders, which only ragzip's own generator "
            "(ragzip.HFGenerator, or its LlamaIndex/LangChain wrappers) can read. Use a text compressor "
            "(extractive, abstractive, truncate) with this LLM, or generate with ragzip's generator."
        )
