"""Core data types: what goes into a compressor and what comes out.

Inputs are never mutated; every output is a new object. A passage's fate is always visible: each input passage has
exactly one :class:`PassageResult`, whatever happened to it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from ragzip.errors import InputError

Decision = Literal["kept", "compressed", "dropped", "soft", "summarized", "duplicate", "empty"]
DECISIONS: tuple[str, ...] = ("kept", "compressed", "dropped", "soft", "summarized", "duplicate", "empty")


def _freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def content_id(text: str) -> str:
    """A stable id for a passage that came without one: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def as_text(value: str | bytes, *, what: str = "passage") -> str:
    """Return ``value`` as ``str``; bytes must be UTF-8, otherwise the error says how to decode them."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(
                f"{what} is not valid UTF-8 (byte {err.start}: {bytes(value)[err.start:err.start + 4]!r}). "
                "Decode it yourself first, e.g. `data.decode('latin-1')` or `data.decode('utf-8', errors='replace')`."
            ) from None
    raise InputError(f"{what} must be str or UTF-8 bytes, got {type(value).__name__}.")


@dataclass(frozen=True)
class Passage:
    """A retrieved passage.

    Args:
        text: The passage text (``str``, or UTF-8 ``bytes`` which are decoded).
        id: A unique id; derived from the text when empty.
        metadata: Source metadata (title, url, ...); copied, never mutated.
        score: The retrieval score, if any.
        embedding: The retriever's embedding of the passage, if kept (xRAG reuses it).

    Example:
        >>> Passage("Paris is the capital of France.", id="p1").id
        'p1'
    """

    text: str
    id: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    score: float | None = None
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", as_text(self.text, what=f"passage {self.id!r}" if self.id else "passage"))
        if not self.id:
            object.__setattr__(self, "id", content_id(self.text))
        object.__setattr__(self, "id", str(self.id))
        object.__setattr__(self, "metadata", _freeze(self.metadata))
        if self.score is not None:
            object.__setattr__(self, "score", float(self.score))
        if self.embedding is not None:
            vec = np.array(self.embedding, dtype=np.float32, copy=True)
            if vec.ndim != 1:
                raise InputError(f"passage {self.id!r}: embedding must be a 1-D vector, got shape {vec.shape}.")
            vec.setflags(write=False)
            object.__setattr__(self, "embedding", vec)

    def with_text(self, text: str, **metadata: Any) -> Passage:
        """A copy with new text and extra metadata (the retrieval embedding is dropped: it described the old text)."""
        return replace(self, text=text, metadata={**self.metadata, **metadata}, embedding=None)


@dataclass(frozen=True)
class Unit:
    """One scored unit of a passage (a sentence, a chunk): its text, score and whether it was kept."""

    index: int
    text: str
    score: float | None
    kept: bool


@dataclass(frozen=True)
class SoftSegment:
    """Soft tokens stored in a :class:`~ragzip.SoftTokenStore`; ``placeholder`` stands for them in prompt text."""

    handle: str
    placeholder: str
    n_vectors: int


@dataclass(frozen=True)
class PassageResult:
    """What a compressor did with one input passage.

    ``text`` is what the generator reads for this passage (empty when dropped; placeholders for soft tokens).
    ``tokens_after`` counts what the generator reads, a soft token counting as one.
    """

    passage: Passage
    text: str
    decision: Decision
    reason: str = ""
    units: tuple[Unit, ...] = ()
    tokens_before: int = 0
    tokens_after: int = 0
    soft: tuple[SoftSegment, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")
        object.__setattr__(self, "units", tuple(self.units))
        object.__setattr__(self, "soft", tuple(self.soft))
        object.__setattr__(self, "extra", _freeze(self.extra))

    @property
    def included(self) -> bool:
        """True when the generator reads something of this passage."""
        return bool(self.text)

    def provenance(self) -> dict[str, Any]:
        """JSON-friendly record of this passage's fate (what adapters put into node/document metadata)."""
        record: dict[str, Any] = {
            "passage_id": self.passage.id,
            "decision": self.decision,
            "reason": self.reason,
            "retrieval_score": self.passage.score,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
        }
        if self.units:
            record["units"] = [
                {"index": u.index, "score": None if u.score is None else round(u.score, 4), "kept": u.kept}
                for u in self.units
            ]
        if self.soft:
            record["soft_tokens"] = sum(s.n_vectors for s in self.soft)
        record.update({k: v for k, v in self.extra.items() if _jsonable(v)})
        return record


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, tuple, dict))


@dataclass(frozen=True)
class CompressedContext:
    """The output of a compressor: one :class:`PassageResult` per input passage, in input order.

    ``summary`` is set by compressors that fuse passages into one text (abstractive); then the per-passage
    results say ``summarized`` and the generator reads ``summary``. An empty ``text`` means "answer without context"
    (selective augmentation), and ``reason`` says why.
    """

    query: str
    results: tuple[PassageResult, ...]
    method: str
    compress_s: float = 0.0
    summary: str | None = None
    summary_tokens: int = 0
    reason: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", tuple(self.results))
        object.__setattr__(self, "extra", _freeze(self.extra))

    @property
    def text(self) -> str:
        """The context the generator reads, passages separated by blank lines."""
        if self.summary is not None:
            return self.summary
        return "\n\n".join(r.text for r in self.results if r.text)

    @property
    def segments(self) -> list[str]:
        """The per-passage texts the generator reads (empty ones left out), or ``[summary]``."""
        if self.summary is not None:
            return [self.summary] if self.summary else []
        return [r.text for r in self.results if r.text]

    @property
    def tokens_before(self) -> int:
        return sum(r.tokens_before for r in self.results)

    @property
    def tokens_after(self) -> int:
        if self.summary is not None:
            return self.summary_tokens
        return sum(r.tokens_after for r in self.results)

    @property
    def compression_ratio(self) -> float:
        """Uncompressed tokens / tokens the generator reads (inf when it reads none of a non-empty context)."""
        after = self.tokens_after
        if after == 0:
            return math.inf if self.tokens_before else 1.0
        return self.tokens_before / after

    @property
    def soft(self) -> tuple[SoftSegment, ...]:
        return tuple(s for r in self.results for s in r.soft)

    def decisions(self) -> dict[str, str]:
        return {r.passage.id: r.decision for r in self.results}


def check_query(query: str | bytes) -> str:
    """Validate a query: text, not blank."""
    query = as_text(query, what="query")
    if not query.strip():
        raise InputError("query is empty. Pass the user's question as `query`; ragzip compresses for a question.")
    return query


def check_passages(passages: Sequence[Passage | str]) -> list[Passage]:
    """Coerce ``str`` items to :class:`Passage` and validate the list (duplicate ids with different text are an error)."""
    if isinstance(passages, (str, bytes, Passage)):
        raise InputError("passages must be a list of Passage (or str), not a single item. Wrap it: `[passage]`.")
    out: list[Passage] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(passages):
        if isinstance(item, (str, bytes)):
            item = Passage(as_text(item, what=f"passage #{i}"), id=f"p{i}")
        if not isinstance(item, Passage):
            raise InputError(f"passage #{i} must be a ragzip.Passage or str, got {type(item).__name__}.")
        if item.id in seen and seen[item.id] != item.text:
            raise InputError(
                f"two different passages share the id {item.id!r} (#{list(seen).index(item.id)} and #{i}). "
                "Give each passage a unique id, or leave `id` empty to derive it from the text."
            )
        seen.setdefault(item.id, item.text)
        out.append(item)
    return out
