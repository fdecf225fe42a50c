"""The framework-free RAG pipeline: FAISS retrieval -> compression -> local generation.

"Not in my documents": with ``generator.no_evidence_reply`` set (e.g. ``"I don't know."``), a question whose
compressed context is empty -- the compressor found no evidence, e.g. ``extractive`` with ``selective: true`` when no
sentence passes its threshold -- gets that reply without calling the model, instead of a guess.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragzip.compressor import Compressor, build_compressor
from ragzip.config import RagzipConfig, load_config
from ragzip.generation import Generation, HFGenerator
from ragzip.quiet import quiet_dependencies
from ragzip.retrieval import FaissRetriever
from ragzip.types import CompressedContext, Passage, check_query

NO_EVIDENCE = "no_evidence"
"""``Generation.finish_reason`` of a reply given without the model because the compressor kept nothing."""


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
        """Time to first token: the wall time of the prefill plus the first answer token, in seconds."""
        return self.generation.ttft_s

    @property
    def no_evidence(self) -> bool:
        """True when the answer is the configured ``no_evidence_reply`` (the compressor kept nothing)."""
        return self.generation.finish_reason == NO_EVIDENCE

    @property
    def total_s(self) -> float:
        """Retrieval + compression + generation."""
        return self.retrieve_s + self.context.compress_s + self.generation.total_s

    def as_dict(self) -> dict[str, Any]:
        """The answer as a JSON-ready dict: text, method, token counts, timings and every passage's provenance."""
        return {
            "question": self.question,
            "answer": self.text,
            "no_evidence": self.no_evidence,
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
    """Retriever + compressor (or chain) + generator, configured by one YAML file.

    Args:
        retriever: Finds the passages for a question.
        compressor: Compresses them; it is bound to ``generator`` (its token counter and soft-token store).
        generator: Answers from the compressed context.
        top_k: Passages retrieved per question.

    Example:
        >>> import ragzip
        >>> pipe = ragzip.RAGPipeline.from_yaml("examples/ragzip.yaml")  # doctest: +SKIP
        >>> answer = pipe.ask("For the World's Fair of which year was the Eiffel Tower built?")  # doctest: +SKIP
        >>> answer.text, answer.context.tokens_after  # doctest: +SKIP
        ('1889', 41)
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
        """Build from a parsed config (:func:`ragzip.load_config`); ``retriever``/``generator`` reuse built ones."""
        with quiet_dependencies():
            generator = generator or HFGenerator(config.generator)
            retriever = retriever or FaissRetriever.from_config(config.retriever)
            compressor = build_compressor(config.compressor, store=generator.store)
            return cls(retriever, compressor, generator, top_k=config.retriever.top_k)

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> RAGPipeline:
        """Build from a ragzip YAML file (``retriever:``, ``compressor:``, ``generator:``)."""
        return cls.from_config(load_config(path), **kwargs)

    def ask(self, question: str) -> Answer:
        """Retrieve, compress and answer one question."""
        return self.ask_batch([question])[0]

    def ask_batch(self, questions: Sequence[str]) -> list[Answer]:
        """Answer several questions; compression and generation are batched across them."""
        questions = [check_query(q) for q in questions]
        with quiet_dependencies():
            start = time.perf_counter()
            retrieved = self.retriever.search_batch(questions, self.top_k)
            retrieve_s = (time.perf_counter() - start) / max(len(questions), 1)
            contexts = self.compressor.compress_batch(questions, retrieved)
            generations = self.answer_contexts(questions, contexts)
        return [
            Answer(q, g.text, tuple(p), c, g, retrieve_s)
            for q, p, c, g in zip(questions, retrieved, contexts, generations)
        ]

    def answer_contexts(self, questions: Sequence[str], contexts: Sequence[CompressedContext]) -> list[Generation]:
        """The generator's answers; with ``no_evidence_reply`` set, contexts without evidence get that reply."""
        return answer_or_decline(self.generator, questions, contexts)


def answer_or_decline(generator: HFGenerator, questions: Sequence[str],
                      contexts: Sequence[CompressedContext]) -> list[Generation]:
    """``generator.answer_batch``, except for contexts with no evidence when ``no_evidence_reply`` is set.

    Such a context gets the generator config's ``no_evidence_reply`` without calling the model.

    Example:
        >>> from ragzip.generation import GeneratorConfig
        >>> gen = HFGenerator(GeneratorConfig(no_evidence_reply="I don't know."))
        >>> empty = CompressedContext("Who?", (), "extractive")
        >>> answer_or_decline(gen, ["Who?"], [empty])[0].text  # no model is loaded for it
        "I don't know."
    """
    reply = generator.config.no_evidence_reply
    declined = [bool(reply) and not c.has_evidence for c in contexts]
    todo = [i for i, d in enumerate(declined) if not d]
    answered = iter(generator.answer_batch([questions[i] for i in todo], [contexts[i] for i in todo]) if todo else [])
    return [Generation(reply, reply, 0, 0, 0.0, 0.0, finish_reason=NO_EVIDENCE) if d else next(answered)
            for d in declined]
