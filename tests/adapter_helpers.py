"""Helpers shared by the LlamaIndex and LangChain adapter tests: toy compressors, a tiny generator built in memory
(no download), and probes of the prompt embeddings the generator builds."""

from __future__ import annotations

import torch
from conftest import build_bpe_tokenizer, build_tiny_llama

from ragzip import Compressor, CompressorConfig, PassageResult, SoftSegment
from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore
from ragzip.tokens import WhitespaceTokenCounter

TRUNCATE = {"type": "truncate", "max_tokens": 6, "tokenizer": "whitespace"}
QUERY = "Who designed the Eiffel Tower?"


class SummaryCompressor(Compressor):
    """Test-only abstractive-style compressor: fuses the passages into one summary (or an empty one)."""

    name = "test-summary"

    def __init__(self, summary: str) -> None:
        super().__init__(CompressorConfig(tokenizer="whitespace"), token_counter=WhitespaceTokenCounter())
        self.summary = summary

    def _compress(self, query, passages):
        results = [PassageResult(p, "", "summarized", tokens_before=len(p.text.split())) for p in passages]
        return self.context(query, results, summary=self.summary, summary_tokens=len(self.summary.split()))


class CountingCompressor(Compressor):
    """Keeps everything; records the number of questions in each batch it is given."""

    name = "test-counting"

    def __init__(self) -> None:
        super().__init__(CompressorConfig(tokenizer="whitespace"), token_counter=WhitespaceTokenCounter())
        self.batches: list[int] = []

    def _compress_batch(self, queries, passages):
        self.batches.append(len(queries))
        return super()._compress_batch(queries, passages)

    def _compress(self, query, passages):
        return self.context(query, [PassageResult(p, p.text, "kept") for p in passages])


class ToySoftCompressor(Compressor):
    """Test-only soft compressor: one soft token per passage, a fixed random vector in the generator's space."""

    name = "test-soft"
    soft = True

    def __init__(self, space: str, dim: int, store: SoftTokenStore) -> None:
        super().__init__(CompressorConfig(tokenizer="whitespace"), token_counter=WhitespaceTokenCounter(),
                         store=store)
        self.space, self.dim = space, dim
        self.vectors: list[torch.Tensor] = []

    def _compress(self, query, passages):
        results = []
        for p in passages:
            vector = torch.randn(1, self.dim)
            self.vectors.append(vector)
            text = self.store.put(vector, space=self.space)
            handle = PLACEHOLDER_RE.fullmatch(text).group(1)
            results.append(PassageResult(p, text, "soft", tokens_before=len(p.text.split()), tokens_after=1,
                                         soft=(SoftSegment(handle, text, 1),)))
        return self.context(query, results)


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained in memory, with a chat template: no download."""
    hf = build_bpe_tokenizer(["The Eiffel Tower in Paris was designed by Gustave Eiffel. Who? Context:"] * 3)
    hf.chat_template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return hf


def tiny_causal_lm():
    """(model, tokenizer): a 2-layer Llama with random weights over :func:`tiny_tokenizer`."""
    tokenizer = tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer), heads=2, max_positions=2048, bos_token_id=1, eos_token_id=2,
                             pad_token_id=0)
    return model, tokenizer


def tiny_generator(parts):
    """ragzip's HFGenerator over the tiny model, with its own soft-token store."""
    from ragzip.generation import GeneratorConfig, HFGenerator

    model, tokenizer = parts
    return HFGenerator(GeneratorConfig(model="tiny-llama", max_new_tokens=3), store=SoftTokenStore(),
                       model=model, tokenizer=tokenizer)


def spy_embeddings(generator) -> list[torch.Tensor]:
    """Record every (T, d) prompt embedding the generator builds."""
    seen: list[torch.Tensor] = []
    inner = generator.embed_prompt

    def embed_prompt(prompt):
        out = inner(prompt)
        seen.append(out.detach().clone())
        return out

    generator.embed_prompt = embed_prompt
    return seen


def contains_row(embeds: torch.Tensor, vector: torch.Tensor) -> bool:
    return bool((embeds == vector.reshape(1, -1)).all(dim=-1).any())
