"""LlamaIndex adapters: a node postprocessor over any ragzip compressor, ragzip's generator as an LLM, its embedder.

Install with ``pip install 'ragzip[llamaindex]'``.

Example:
    >>> from ragzip.integrations.llamaindex import RagzipEmbedding, RagzipLLM, RagzipPostprocessor, qa_prompt
    >>> llm = RagzipLLM.from_yaml("ragzip.yaml")  # doctest: +SKIP
    >>> engine = index.as_query_engine(  # doctest: +SKIP
    ...     node_postprocessors=[RagzipPostprocessor.from_yaml("ragzip.yaml", llm=llm)],
    ...     llm=llm, text_qa_template=qa_prompt("ragzip.yaml"),
    ... )

What the postprocessor returns (the rules are the same in the LangChain adapter):

* One node per passage the LLM reads, in retrieval order, each a **copy** of its input node (same id, metadata,
  relationships and score) holding the compressed text. Passages are never merged. Input nodes are never mutated.
* ``node.metadata["ragzip"]`` is the passage's provenance (:meth:`ragzip.PassageResult.provenance`: decision, reason,
  retrieval score, tokens before/after, and per unit its text, score, whether the LLM reads it, its kind and its
  character span ``start``/``end`` in the original node text, for highlighting and citing; after a chain, ``stages``
  lists every stage's decision and units); the key is excluded from the LLM and embedding metadata modes, so it
  never reaches the prompt.
* Dropped passages are left out of the output but stay visible: in the ``RERANKING`` callback event's end payload
  (``"ragzip"``: a report with every decision), in :attr:`RagzipPostprocessor.last_context` and in an INFO log line
  (a WARNING when nothing at all is left). ``keep_dropped=True`` returns every input passage instead, the dropped ones
  with empty text and their decision.
* A compressor that fuses passages into one summary (``abstractive``) yields one summary node whose
  ``metadata["ragzip"]`` has ``decision="summary"`` and lists every source passage's id and decision under
  ``"sources"``; an empty summary (selective augmentation: "nothing here helps") yields no node.
* Soft compressors (``xrag``, ``refrag``) yield nodes whose text holds soft-token placeholders. Only
  :class:`RagzipLLM` reads them; the postprocessor adds a :class:`SoftTokenGuard` to its callback manager (which a
  query engine shares with its LLM), so any other LLM fails with :class:`~ragzip.SoftTokenError` instead of being sent
  placeholder text. Caveat: LlamaIndex's refine/compact synthesizers catch ``ValueError`` from the LLM call and
  only log it ("Structured response error: ...") before answering "Empty Response"; while ``SoftTokenError`` is a
  ``ValueError``, that is how a guarded query engine reports it (the placeholders still never reach the LLM).
* Synthesizers split contexts that do not fit one prompt. Give them :meth:`RagzipLLM.prompt_helper`
  (``get_response_synthesizer(llm=llm, prompt_helper=llm.prompt_helper())``, or ``Settings.prompt_helper``): it counts
  placeholders as the positions they fill and never cuts or repeats one, where LlamaIndex's default counts each as
  about 25 tokens and overlaps chunks (a placeholder sent twice is a :class:`~ragzip.SoftTokenError`).

One module per concern: ``postprocessor`` (:class:`RagzipPostprocessor`), ``guard`` (:class:`SoftTokenGuard`), ``llm``
(:class:`RagzipLLM` and its prompt helper), ``embedding`` (:class:`RagzipEmbedding`) and ``prompt`` (:func:`qa_prompt`).
"""

from __future__ import annotations

from ragzip._lazy import require

require("llama_index.core", feature="ragzip.integrations.llamaindex")

from ragzip.integrations.llamaindex.embedding import RagzipEmbedding  # noqa: E402
from ragzip.integrations.llamaindex.guard import RAGZIP_LLM_CLASS_NAMES as RAGZIP_LLM_CLASS_NAMES  # noqa: E402
from ragzip.integrations.llamaindex.guard import SoftTokenGuard  # noqa: E402
from ragzip.integrations.llamaindex.llm import RagzipLLM  # noqa: E402
from ragzip.integrations.llamaindex.postprocessor import RagzipPostprocessor  # noqa: E402
from ragzip.integrations.llamaindex.prompt import qa_prompt  # noqa: E402

__all__ = ["RagzipEmbedding", "RagzipLLM", "RagzipPostprocessor", "SoftTokenGuard", "qa_prompt"]
