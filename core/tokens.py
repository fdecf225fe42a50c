"""Token counting with the generator's tokenizer: compression ratios count the tokens the generator really reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ragzip.models import load_tokenizer


@runtime_checkable
class TokenCounter(Protocol):
    """Counts and cuts text in the generator's tokens."""

    def count(self, text: str) -> int:
        """The number of tokens in ``text`` (``0`` for an empty text)."""

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """:meth:`count` of each text, in order; one call, so a tokenizer can batch them."""

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that has at most ``max_tokens`` tokens (``""`` when ``max_tokens <= 0``)."""


class HFTokenCounter:
    """A :class:`TokenCounter` over a Hugging Face tokenizer (no special tokens counted).

    Args:
        tokenizer: A Hugging Face tokenizer; :meth:`truncate` needs a fast one (it cuts at token offsets).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        """The number of tokens in ``text``, special tokens left out (``0`` for an empty text)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """:meth:`count` of each text, tokenized in one batched call."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) if t else 0 for x, t in zip(ids, texts)]

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``, without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """The text of the token ids ``ids``."""
        return self.tokenizer.decode(list(ids))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that has at most ``max_tokens`` tokens, cut at a token boundary."""
        if max_tokens <= 0:
            return ""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text
        return text[: offsets[max_tokens - 1][1]]


class WhitespaceTokenCounter:
    """Counts whitespace-separated words. For tests and tokenizer-free use; not what a generator reads."""

    def count(self, text: str) -> int:
        """The number of whitespace-separated words in ``text``."""
        return len(text.split())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """:meth:`count` of each text, in order."""
        return [self.count(t) for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The first ``max_tokens`` words of ``text``, joined by single spaces (``""`` when ``max_tokens <= 0``)."""
        words = text.split()
        return " ".join(words[: max(max_tokens, 0)])


def load_token_counter(spec: str) -> TokenCounter:
    """The token counter of a causal LM spec (``embedded:smollm2-135m``, HF id or path); ``whitespace`` for words."""
    if spec == "whitespace":
        return WhitespaceTokenCounter()
    return HFTokenCounter(load_tokenizer(spec))
