"""JSON-friendly accounts of one compression call: the per-call report and the provenance of a fused summary.

Framework-free: the LlamaIndex and LangChain adapters put these records into callback payloads and node/document
metadata; anything else that logs or serves compression results can use them as they are.

Example:
    >>> from ragzip import build_compressor
    >>> ctx = build_compressor({"type": "truncate", "max_tokens": 2, "tokenizer": "whitespace"}).compress(
    ...     "Who?", ["one two three", "", "four"])
    >>> info = report(ctx)
    >>> info["decisions"], [r["decision"] for r in info["not_included"]]
    ({'compressed': 1, 'empty': 1, 'dropped': 1}, ['empty', 'dropped'])
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ragzip.types import CompressedContext

__all__ = ["NOT_INCLUDED", "SUMMARY_DECISION", "report", "summary_record"]

SUMMARY_DECISION = "summary"
"""The ``decision`` of the record that describes a fused (abstractive) summary rather than one passage."""

NOT_INCLUDED = ("dropped", "empty", "duplicate")
"""Decisions of passages the generator reads nothing of."""


def summary_record(ctx: CompressedContext) -> dict[str, Any]:
    """Provenance of a summary (abstractive) output: every source passage's id and decision.

    Example:
        >>> from ragzip import Passage, PassageResult
        >>> ctx = CompressedContext("Who?", (PassageResult(Passage("Ada wrote.", id="a"), "", "summarized"),),
        ...                         "abstractive", summary="Ada.")
        >>> summary_record(ctx)["sources"]
        [{'passage_id': 'a', 'decision': 'summarized', 'retrieval_score': None}]
    """
    return {
        "decision": SUMMARY_DECISION,
        "method": ctx.method,
        "reason": ctx.reason,
        "tokens_before": ctx.tokens_before,
        "tokens_after": ctx.tokens_after,
        "sources": [{"passage_id": r.passage.id, "decision": r.decision, "retrieval_score": r.passage.score}
                    for r in ctx.results],
    }


def report(ctx: CompressedContext) -> dict[str, Any]:
    """A JSON-friendly account of one compression call: what the generator reads and what was left out.

    Every input passage is counted once under ``decisions``; the ones the generator reads nothing of are listed under
    ``not_included`` with their reason. See the module docstring for an example.
    """
    ratio = ctx.compression_ratio
    return {
        "method": ctx.method,
        "passages": len(ctx.results),
        "decisions": dict(Counter(r.decision for r in ctx.results)),
        "not_included": [{"passage_id": r.passage.id, "decision": r.decision, "reason": r.reason}
                         for r in ctx.results if r.decision in NOT_INCLUDED],
        "summary": ctx.summary is not None,
        "tokens_before": ctx.tokens_before,
        "tokens_after": ctx.tokens_after,
        "compression_ratio": None if math.isinf(ratio) else round(ratio, 3),
        "soft_tokens": sum(s.n_vectors for s in ctx.soft),
        "compress_s": round(ctx.compress_s, 4),
        "reason": ctx.reason,
    }
