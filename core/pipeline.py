"""The framework-free RAG pipeline: FAISS retrieval -> compression -> local generation."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragzip.compressor import Compressor, build_compressor
from ragzip.config import RagzipConfig, load_config
from ragzip.generation import Generation, HFGenerator
from ragzip.retrieval import FaissRetriever
from ragzip.types import CompressedContext, Passage, check_query


@dataclass(frozen=True)
class Answer:
    """One answered question, with everything needed to see what the generator read and what it cost."""

    question: str
    text: str
    passages: tuple[Passage, ...]
    context: CompressedContext
    generation: Generation
    retrieve_s: float

    @property
    def ttft_s(self) -> float:
        return self.generation.ttft_s

    @property
    def total_s(self) -> float:
        """Retrieval + compression + generation."""
        return self.retrieve_s + self.context.compress_s + self.generation.total_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "method": self.context.method,
            "context_tokens": self.context.tokens_after,
            "uncompressed_tokens": self.context.tokens_before,
            "compression_ratio": self.context.compression_ratio,
            "retrieve_s": self.retrieve_s,
            "compress_s": self.context.compress_s,
            "ttft_s": self.ttft_s,
            "total_s": self.total_s,
            "passages": [r.provenance() for r in self.context.results],
        }


class RAGPipeline:
    """Retriever + compressor (or chain) + generator.

    Example:
        >>> pipe = RAGPipeline.from_yaml("examples/ragzip.yaml")  # doctest: +SKIP
        >>> pipe.ask("Who designed the Eiffel Tower?").text  # doctest: +SKIP
    """

    def __init__(self, retriever: FaissRetriever, compressor: Compressor, generator: HFGenerator,
                 *, top_k: int = 5) -> None:
        self.retriever = retriever
        self.compressor = compressor
        self.generator = generator
        self.top_k = top_k
        compressor.bind(generator)

    @classmethod
    def from_config(cls, config: RagzipConfig, *, retriever: FaissRetriever | None = None,
                    generator: HFGenerator | None = None) -> RAGPipeline:
        generator = generator or HFGenerator(config.generator)
        retriever = retriever or FaissRetriever.from_config(config.retriever)
        compressor = build_compressor(config.compressor, store=generator.store)
        return cls(retriever, compressor, generator, top_k=config.retriever.top_k)

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> RAGPipeline:
        return cls.from_config(load_config(path), **kwargs)

    def ask(self, question: str) -> Answer:
        """Retrieve, compress and answer one question."""
        return self.ask_batch([question])[0]

    def ask_batch(self, questions: Sequence[str]) -> list[Answer]:
        """Answer several questions; compression and generation are batched across them."""
        questions = [check_query(q) for q in questions]
        start = time.perf_counter()
        retrieved = self.retriever.search_batch(questions, self.top_k)
        retrieve_s = (time.perf_counter() - start) / max(len(questions), 1)
        contexts = self.compressor.compress_batch(questions, retrieved)
        generations = self.generator.answer_batch(questions, contexts)
        return [
            Answer(q, g.text, tuple(p), c, g, retrieve_s)
            for q, p, c, g in zip(questions, retrieved, contexts, generations)
        ]
