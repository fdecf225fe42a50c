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
from ragzip.text import UNIT_KINDS as SPLITTER_KINDS

Decision = Literal["kept", "compressed", "dropped", "soft", "summarized", "duplicate", "empty"]
DECISIONS: tuple[str, ...] = ("kept", "compressed", "dropped", "soft", "summarized", "duplicate", "empty")
"""What happened to a passage, as :attr:`PassageResult.decision` says it:

* ``kept``: kept whole; the generator reads the passage's text verbatim.
* ``compressed``: cut; the generator reads part of it (some sentences, a token prefix, some chunks as text).
* ``dropped``: the generator reads nothing of it (``reason`` says why).
* ``summarized``: fused into one summary with the other passages (:attr:`CompressedContext.summary`).
* ``soft``: read as soft tokens (vectors), wholly or in part.
* ``duplicate`` / ``empty``: the same passage came earlier / it had no text; never silently lost.

In a chain the decision is the passage's fate over all stages: a passage that one stage cut and a later stage passed
on is ``compressed``, not ``kept``.
"""

UNIT_KINDS: tuple[str, ...] = (*SPLITTER_KINDS, "chunk")
"""Known :attr:`Unit.kind` values: the sentence splitter's (:data:`ragzip.text.UNIT_KINDS`), and ``chunk`` for
fixed-size token chunks (``refrag``)."""


def _freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view of a deep copy: nested dicts/lists are not shared with the caller (who may mutate them)."""
    return MappingProxyType(_deep_copy(dict(mapping or {}), 0, set()))


_MAX_DEPTH = 64


def _deep_copy(value: Any, depth: int, path: set[int]) -> Any:
    """Copy nested dicts, lists, tuples and sets; a cycle or nesting deeper than 64 is an :class:`InputError`."""
    if not isinstance(value, (dict, list, tuple, set, frozenset, Mapping)):
        return value
    if depth > _MAX_DEPTH:
        raise InputError(f"metadata is nested more than {_MAX_DEPTH} levels deep; flatten it (ragzip keeps metadata "
                         "as JSON: strings, numbers, lists and dicts).")
    if id(value) in path:
        raise InputError("metadata contains a circular reference (a dict or list that contains itself); pass plain "
                         "JSON-like metadata.")
    path.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {k: _deep_copy(v, depth + 1, path) for k, v in value.items()}
        items = [_deep_copy(v, depth + 1, path) for v in value]
        if isinstance(value, list):
            return items
        return type(value)(items) if type(value) in (tuple, set, frozenset) else value  # e.g. a namedtuple: kept
    finally:
        path.discard(id(value))


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None`` (tuples as lists).

    ``json.dumps(..., allow_nan=False)`` then accepts it: provenance goes into other systems' metadata stores, which
    reject NaN.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


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
    """One scored unit of a passage (a sentence, a heading, a chunk): its text, score and whether it was kept.

    ``start``/``end`` locate the unit in the passage text: ``passage.text[start:end] == text`` (``None`` when the unit
    is not a verbatim span, e.g. a chunk decoded from tokens). An app highlights or cites exactly these characters.
    ``kind`` is the splitter's structural kind (see :data:`UNIT_KINDS`), empty when unknown.

    Example:
        >>> p = Passage("Paris is in France. It rains.", id="p")
        >>> u = Unit(0, "It rains.", 0.1, False, start=20, end=29, kind="sentence")
        >>> p.text[u.start:u.end] == u.text
        True
    """

    index: int
    text: str
    score: float | None
    kept: bool
    start: int | None = None
    end: int | None = None
    kind: str = ""

    def record(self) -> dict[str, Any]:
        """JSON-friendly form (what provenance records hold)."""
        return {"index": self.index, "text": self.text, "score": None if self.score is None else round(self.score, 4),
                "kept": self.kept, "start": self.start, "end": self.end, "kind": self.kind}


def locate_units(text: str, units: Sequence[Unit]) -> tuple[Unit, ...]:
    """Fill missing ``start``/``end`` of units that appear verbatim in ``text``, searching in order.

    Units are in passage order, so each is searched from the end of the previous one; a unit that is not a verbatim
    span keeps ``None`` (and does not move the search).

    Example:
        >>> [(u.start, u.end) for u in locate_units("A b. C d.", [Unit(0, "A b.", 1.0, True), Unit(1, "C d.", 0.0, False)])]
        [(0, 4), (5, 9)]
    """
    out: list[Unit] = []
    cursor = 0
    for u in units:
        if u.start is not None and u.end is not None:
            out.append(u)
            cursor = max(cursor, u.end)
            continue
        at = text.find(u.text, cursor) if u.text else -1
        if at < 0 and u.text:
            at = text.find(u.text)
        if at < 0:
            out.append(u)
            continue
        out.append(replace(u, start=at, end=at + len(u.text)))
        cursor = at + len(u.text)
    return tuple(out)


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
    ``tokens_after`` counts what the generator reads, a soft token counting as one. ``decision`` is one of
    :data:`DECISIONS` (see there). ``units`` are the scored sentences or chunks, their spans in ``passage.text``.
    After a chain, ``stages`` holds every stage's own result for this passage (its decision, reason and units, the
    units' spans mapped back to the original passage text), and ``units`` are the last scoring stage's units with
    ``kept`` meaning "the generator reads this unit whole".
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
    stages: tuple[StageResult, ...] = ()

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")
        object.__setattr__(self, "units", tuple(self.units))
        object.__setattr__(self, "soft", tuple(self.soft))
        object.__setattr__(self, "extra", _freeze(self.extra))
        object.__setattr__(self, "stages", tuple(self.stages))

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
            record["units"] = [u.record() for u in self.units]
        if self.soft:
            record["soft_tokens"] = sum(s.n_vectors for s in self.soft)
        record.update({k: v for k, v in self.extra.items() if _jsonable(v)})
        if self.stages:
            record["stages"] = [s.record() for s in self.stages]
        return strict_json(record)

    @property
    def kept_units(self) -> tuple[Unit, ...]:
        """The units the generator reads (whole), in passage order."""
        return tuple(u for u in self.units if u.kept)


@dataclass(frozen=True)
class StageResult:
    """One chain stage's result for one passage: what that stage decided and the units it scored.

    Unit spans point into the *original* passage text (mapped back through the earlier stages); ``None`` where a unit
    does not map to original characters.
    """

    method: str
    decision: Decision
    reason: str = ""
    units: tuple[Unit, ...] = ()
    tokens_before: int = 0
    tokens_after: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", tuple(self.units))
        object.__setattr__(self, "extra", _freeze(self.extra))

    def record(self) -> dict[str, Any]:
        """JSON-friendly form."""
        out: dict[str, Any] = {"method": self.method, "decision": self.decision, "reason": self.reason,
                               "tokens_before": self.tokens_before, "tokens_after": self.tokens_after}
        if self.units:
            out["units"] = [u.record() for u in self.units]
        out.update({k: v for k, v in self.extra.items() if _jsonable(v) and k not in out})
        return out


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
        """The generator's tokens in the input passages, all of them."""
        return sum(r.tokens_before for r in self.results)

    @property
    def tokens_after(self) -> int:
        """The tokens the generator reads: the summary's, else the kept texts' (soft tokens count one per vector)."""
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
        """Every soft-token segment the results hold, in passage order (empty for a text-only compressor)."""
        return tuple(s for r in self.results for s in r.soft)

    def decisions(self) -> dict[str, str]:
        """``{passage id: decision}`` for every input passage (``kept``, ``compressed``, ``dropped``...)."""
        return {r.passage.id: r.decision for r in self.results}

    def explain(self, *, all_units: bool = False, width: int = 110, indent: str = "  ") -> str:
        """A readable account of every passage's fate: decision, tokens, chain stages and units.

        Args:
            all_units: List every scored unit, not only the ones the generator reads (marked ``+``).
            width: The longest a unit's or the summary's text is shown, in characters (longer ones are clipped).
            indent: Prefix of every line.

        Returns:
            One line per passage, stage list, soft-token count and unit, joined by newlines.

        Example:
            >>> p = Passage("Paris is in France. It rains.", id="p1")
            >>> r = PassageResult(p, "Paris is in France.", "compressed", units=(
            ...     Unit(0, "Paris is in France.", 0.91, True), Unit(1, "It rains.", 0.02, False)), tokens_before=6,
            ...     tokens_after=4)
            >>> print(CompressedContext("Where is Paris?", (r,), "extractive").explain())
              - p1: compressed 6->4 tokens
                  + 0.910  Paris is in France.
                    (1 more unit not read; all_units=True lists them)
        """
        lines = []
        if self.summary:
            lines.append(f"{indent}summary: {_clip(self.summary, width)}")
        for r in self.results:
            score = "" if r.passage.score is None else f" (retrieval score {r.passage.score:.2f})"
            lines.append(f"{indent}- {r.passage.id}: {r.decision} {r.tokens_before}->{r.tokens_after} tokens{score}"
                         + (f": {r.reason}" if r.reason else ""))
            if r.stages:
                lines.append(f"{indent}    stages: " + " -> ".join(f"{s.method}:{s.decision}" for s in r.stages))
            if r.soft:
                lines.append(f"{indent}    {sum(s.n_vectors for s in r.soft)} soft token(s)")
            units = r.units if all_units else r.kept_units
            for u in units:
                kind = f"[{u.kind}] " if u.kind and u.kind not in ("sentence", "chunk") else ""
                value = "  -  " if u.score is None else f"{u.score:.3f}"
                lines.append(f"{indent}    {'+' if u.kept else ' '} {value}  {kind}{_clip(u.text, width)}")
            hidden = len(r.units) - len(units)
            if hidden:
                lines.append(f"{indent}      ({hidden} more unit{'s' if hidden > 1 else ''} not read; all_units=True "
                             "lists them)")
        return "\n".join(lines)

    @property
    def has_evidence(self) -> bool:
        """False when the generator would read nothing.

        That is when every passage was dropped (or none came), or the summary is empty ("nothing here helps"). A
        pipeline with ``generator.no_evidence_reply`` set then answers that reply.
        """
        return bool(self.text.strip())


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


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
