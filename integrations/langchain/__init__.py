"""LangChain adapters: a document compressor over any ragzip compressor, ragzip's generator as an LLM and a chat model,
and its embedder.

Install with ``pip install 'ragzip[langchain]'``.

Example:
    >>> from langchain_classic.retrievers import ContextualCompressionRetriever
    >>> from ragzip.integrations.langchain import RagzipChatModel, RagzipCompressor, format_documents, qa_prompt
    >>> chat = RagzipChatModel.from_yaml("ragzip.yaml")  # doctest: +SKIP
    >>> retriever = ContextualCompressionRetriever(  # doctest: +SKIP
    ...     base_compressor=RagzipCompressor.from_yaml("ragzip.yaml", llm=chat),
    ...     base_retriever=vectorstore.as_retriever())
    >>> chain = ({"context": retriever | format_documents, "question": RunnablePassthrough()}  # doctest: +SKIP
    ...          | qa_prompt("ragzip.yaml") | chat | StrOutputParser())

What the compressor returns (the same rules as the LlamaIndex postprocessor):

* One document per passage the LLM reads, in retrieval order, each a **copy** of its input document (same id and
  metadata) holding the compressed text. Documents are never merged; inputs are never mutated.
* ``doc.metadata["ragzip"]`` is the passage's provenance (:meth:`ragzip.PassageResult.provenance`: decision, reason,
  and per unit its text, score, whether the LLM reads it, its kind and its character span ``start``/``end`` in the
  original ``page_content``; after a chain, ``stages`` lists every stage's decision and units; after another ragzip
  compressor, e.g. in a ``DocumentCompressorPipeline``, its record is kept under ``upstream``, its spans in the text
  that compressor read). A document without an ``id`` gets a passage id derived from its text, so identical texts are
  reported as ``duplicate``.
* Dropped passages are left out but stay visible: :attr:`RagzipCompressor.last_context`, a ``ragzip_compression``
  custom callback event (the per-call report) and an INFO log line (a WARNING when nothing is left);
  ``keep_dropped=True`` returns them with empty ``page_content`` and their decision.
* A summary (``abstractive``) is one document with ``metadata["ragzip"]["decision"] == "summary"`` listing every
  source passage under ``"sources"``; an empty summary yields no document.
* Soft compressors (``xrag``, ``refrag``) put soft-token placeholders in ``page_content``; only :class:`RagzipLLM` and
  :class:`RagzipChatModel` read them. When such a compressor is used, :func:`install_soft_token_guard` adds a
  :class:`SoftTokenGuard` to every LangChain run in the process, so any other LLM or chat model fails with
  :class:`~ragzip.SoftTokenError` instead of receiving placeholder text.

One module per concern: ``compressor`` (:class:`RagzipCompressor`), ``guard`` (:class:`SoftTokenGuard`,
:func:`install_soft_token_guard`), ``llm`` (:class:`RagzipLLM`, :class:`RagzipChatModel`), ``embedding``
(:class:`RagzipEmbeddings`) and ``prompt`` (:func:`qa_prompt`, :func:`format_documents`).
"""

from __future__ import annotations

from ragzip._lazy import require

require("langchain_core", feature="ragzip.integrations.langchain")

from ragzip.integrations.langchain.compressor import CUSTOM_EVENT as CUSTOM_EVENT  # noqa: E402
from ragzip.integrations.langchain.compressor import RagzipCompressor  # noqa: E402
from ragzip.integrations.langchain.embedding import RagzipEmbeddings  # noqa: E402
from ragzip.integrations.langchain.guard import RAGZIP_LLM_TYPES as RAGZIP_LLM_TYPES  # noqa: E402
from ragzip.integrations.langchain.guard import SoftTokenGuard, install_soft_token_guard  # noqa: E402
from ragzip.integrations.langchain.llm import RagzipChatModel, RagzipLLM  # noqa: E402
from ragzip.integrations.langchain.prompt import format_documents, qa_prompt  # noqa: E402

__all__ = [
    "RagzipChatModel",
    "RagzipCompressor",
    "RagzipEmbeddings",
    "RagzipLLM",
    "SoftTokenGuard",
    "format_documents",
    "install_soft_token_guard",
    "qa_prompt",
]
