"""The LangChain document compressor over any ragzip compressor (the rules it keeps: the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks.manager import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables import RunnableLambda
from pydantic import ConfigDict, Field, PrivateAttr

from ragzip.batching import AsyncBatcher
from ragzip.compressor import Compressor
from ragzip.integrations._common import check_kwargs, compressor_from_yaml, generator_of, log_report, resolve_compressor
from ragzip.integrations.langchain._documents import (
    CUSTOM_EVENT,
    adispatch,
    dispatch,
    documents_of,
    passages_of,
    unpack_input,
)
from ragzip.integrations.langchain.guard import install_soft_token_guard
from ragzip.softguard import track_store
from ragzip.types import CompressedContext, check_query

__all__ = ["CUSTOM_EVENT", "RagzipCompressor"]


class RagzipCompressor(BaseDocumentCompressor):
    """Compresses retrieved documents with any registered ragzip compressor (or chain of them).

    Args:
        compressor: A built :class:`~ragzip.Compressor` (``ragzip.build_compressor(...)``).
        config: Or the compressor's config: one ``{"type": ..., ...}`` dict, or a list of them (a chain).
        keep_dropped: Return dropped passages too, with empty text and their decision.
        guard_foreign_llms: When a soft compressor is used, install :class:`SoftTokenGuard` process-wide.
        max_batch: Most concurrent async calls compressed in one ``compress_batch``.

    Example:
        >>> from langchain_core.documents import Document
        >>> comp = RagzipCompressor(config={"type": "truncate", "max_tokens": 2, "tokenizer": "whitespace"})
        >>> [d.page_content for d in comp.compress_documents([Document("one two three")], "What?")]
        ['one two']
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    compressor: Compressor = Field(description="The ragzip compressor (or chain) to run.")
    keep_dropped: bool = Field(
        default=False, description="Return dropped passages too, with empty text and their decision.")
    guard_foreign_llms: bool = Field(
        default=True, description="With a soft compressor, make LLMs other than ragzip's fail clearly.")
    max_batch: int = Field(default=32, ge=1, description="Most concurrent async calls compressed in one batch.")

    _batcher: AsyncBatcher = PrivateAttr()
    _last_context: CompressedContext | None = PrivateAttr(default=None)

    def __init__(self, compressor: Compressor | None = None, *, config: Any = None, **kwargs: Any) -> None:
        check_kwargs(type(self), kwargs, ("config",))
        built = resolve_compressor(compressor, config, who="RagzipCompressor")
        super().__init__(compressor=built, **kwargs)
        self._batcher = AsyncBatcher(built, max_batch=self.max_batch)
        track_store(built.store)
        if built.soft and self.guard_foreign_llms:
            install_soft_token_guard()

    @classmethod
    def from_yaml(cls, path: str | Path, *, llm: Any = None, **kwargs: Any) -> RagzipCompressor:
        """Build from the ``compressor:`` block of a ragzip YAML; ``llm`` (a ragzip LLM/chat model) binds it."""
        comp = cls(compressor_from_yaml(path), **kwargs)
        return comp.bind(llm) if llm is not None else comp

    @property
    def last_context(self) -> CompressedContext | None:
        """The :class:`~ragzip.CompressedContext` of the most recent call: every passage's decision.

        Under concurrent use it is whichever call finished last; listen to the ``ragzip_compression`` callback event
        for per-call reports.
        """
        return self._last_context

    def bind(self, llm: Any) -> RagzipCompressor:
        """Count tokens with ``llm``'s tokenizer and share its soft-token store.

        Soft compressors must be bound to their reader.

        Args:
            llm: The reader: a :class:`RagzipLLM`, a :class:`RagzipChatModel` or an ``HFGenerator``.

        Returns:
            This compressor, for chaining.

        Raises:
            ConfigError: ``llm`` is neither ragzip's generator nor one of its LLM wrappers.
            SoftTokenError: a soft compressor's trained parts do not fit the reader's embedding space.
        """
        self.compressor.bind(generator_of(llm))
        track_store(self.compressor.store)
        return self

    # ---------------------------------------------------------------------------------------------- the work
    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        """Compress ``documents`` for ``query``; see the package docstring for what comes back."""
        query = check_query(query)
        if not documents:
            return []
        context = self.compressor.compress(query, passages_of(documents))
        dispatch(callbacks, self._finish(context))
        return documents_of(documents, context, keep_dropped=self.keep_dropped)

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        """Compress in a worker thread; concurrent calls on one event loop are batched into one ``compress_batch``."""
        query = check_query(query)
        if not documents:
            return []
        context = await self._batcher.compress(query, passages_of(documents))
        await adispatch(callbacks, self._finish(context))
        return documents_of(documents, context, keep_dropped=self.keep_dropped)

    def as_runnable(self) -> RunnableLambda:
        """This compressor as a Runnable that returns the compressed documents.

        Its input is ``{"query": str, "documents": [Document, ...]}`` or a ``(query, documents)`` pair; ``abatch``
        compresses in one batch.

        Example:
            >>> comp.as_runnable().invoke({"query": "Who?", "documents": docs})  # doctest: +SKIP
        """

        def invoke(inputs: Any) -> list[Document]:
            return list(self.compress_documents(*unpack_input(inputs)))

        async def ainvoke(inputs: Any) -> list[Document]:
            return list(await self.acompress_documents(*unpack_input(inputs)))

        return RunnableLambda(invoke, afunc=ainvoke, name="RagzipCompressor")

    def _finish(self, context: CompressedContext) -> dict[str, Any]:
        self._last_context = context
        if context.soft and self.guard_foreign_llms:
            install_soft_token_guard()
        return log_report(context, "RagzipCompressor")

