"""The reference rows of every comparison: ``none`` keeps every passage whole, ``truncate`` cuts at a token budget."""

from __future__ import annotations

from ragzip.compressor import Compressor
from ragzip.plugins.baseline.config import NoneConfig, TruncateConfig
from ragzip.types import CompressedContext, Passage, PassageResult


class NoneCompressor(Compressor):
    """Pass-through: every passage is kept whole."""

    name = "none"
    config_class = NoneConfig

    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        counts = self.token_counter.count_many([p.text for p in passages])
        return self.context(query, [PassageResult(p, p.text, "kept", tokens_before=n, tokens_after=n)
                                    for p, n in zip(passages, counts)])


class TruncateCompressor(Compressor):
    """Keeps the first ``max_tokens`` tokens of the passages in retrieval order; the rest is dropped, visibly."""

    name = "truncate"
    config_class = TruncateConfig

    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        budget = self.config.max_tokens
        counts = self.token_counter.count_many([p.text for p in passages])
        results = []
        for p, n in zip(passages, counts):
            if budget >= n:
                results.append(PassageResult(p, p.text, "kept", tokens_before=n, tokens_after=n))
                budget -= n
            elif budget > 0:
                text = self.token_counter.truncate(p.text, budget)
                used = self.token_counter.count(text)
                results.append(PassageResult(p, text, "compressed", reason=f"cut to the {budget}-token budget",
                                             tokens_before=n, tokens_after=used))
                budget = 0
            else:
                results.append(PassageResult(p, "", "dropped", reason="token budget used up by earlier passages",
                                             tokens_before=n))
        return self.context(query, results)
