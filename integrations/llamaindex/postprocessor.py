"""The LlamaIndex node postprocessor over any ragzip compressor (the rules it keeps: the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from ragzip.batching import AsyncBatcher
from ragzip.compressor import Compressor
from ragzip.integrations._common import (
    METADATA_KEY,
    check_kwargs,
    compressor_from_yaml,
    generator_of,
    log_report,
    resolve_compressor,
)
from ragzip.integrations.llamaindex._nodes import nodes_of, passages_of, query_of
from ragzip.integrations.llamaindex.guard import SoftTokenGuard
from ragzip.softguard import track_store
from ragzip.types import CompressedContext

__all__ = ["RagzipPostprocessor"]


class RagzipPostprocessor(BaseNodePostprocessor):
    """Compresses retrieved nodes with any registered ragzip compressor (or chain of them).

    Args:
        compressor: A built :class:`~ragzip.Compressor` (``ragzip.build_compressor(...)``).
        config: Or the compressor's config: one ``{"type": ..., ...}`` dict, or a list of them (a chain).
        keep_dropped: Return dropped passages too, with empty text and their decision.
        guard_foreign_llms: When the output holds soft tokens, add a :class:`SoftTokenGuard` to the callback manager
            so that an LLM other than :class:`RagzipLLM` fails clearly.
        callback_manager: LlamaIndex callback manager (a query engine sets its own).

    Example:
        >>> from llama_index.core.schema import NodeWithScore, TextNode
        >>> post = RagzipPostprocessor(config={"type": "truncate", "max_tokens": 3, "tokenizer": "whitespace"})
        >>> nodes = [NodeWithScore(node=TextNode(text="one two three four", id_="n1"), score=0.9)]
        >>> out = post.postprocess_nodes(nodes, query_str="What?")
        >>> out[0].node.text, out[0].node.metadata["ragzip"]["decision"]
        ('one two three', 'compressed')
    """

    keep_dropped: bool = Field(default=False, description=(
        "Return dropped passages too, with empty text and their decision in metadata['ragzip']."))
    guard_foreign_llms: bool = Field(default=True, description=(
        "Make LLMs other than RagzipLLM fail clearly when the context holds soft-token placeholders."))
    method: str = Field(default="", description="The compressor's name (its YAML `type:`, or a chain of them).")

    _compressor: Compressor = PrivateAttr()
    _batcher: AsyncBatcher = PrivateAttr()
    _last_context: CompressedContext | None = PrivateAttr(default=None)

    def __init__(self, compressor: Compressor | None = None, *, config: Any = None, keep_dropped: bool = False,
                 guard_foreign_llms: bool = True, callback_manager: CallbackManager | None = None,
                 **kwargs: Any) -> None:
        check_kwargs(type(self), kwargs, ("compressor", "config"))  # pydantic would ignore a misspelt option
        built = resolve_compressor(compressor, config, who="RagzipPostprocessor")
        super().__init__(keep_dropped=keep_dropped, guard_foreign_llms=guard_foreign_llms, method=built.name,
                         callback_manager=callback_manager or CallbackManager([]), **kwargs)
        self._compressor = built
        self._batcher = AsyncBatcher(built)
        track_store(built.store)

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this component under."""
        return "RagzipPostprocessor"

    @classmethod
    def from_yaml(cls, path: str | Path, *, llm: Any = None, **kwargs: Any) -> RagzipPostprocessor:
        """Build from the ``compressor:`` block of a ragzip YAML; ``llm`` (a :class:`RagzipLLM`) binds it.

        Example:
            >>> RagzipPostprocessor.from_yaml("examples/ragzip.yaml")  # doctest: +SKIP
        """
        post = cls(compressor_from_yaml(path), **kwargs)
        return post.bind(llm) if llm is not None else post

    @property
    def compressor(self) -> Compressor:
        """The ragzip compressor this postprocessor runs."""
        return self._compressor

    @property
    def last_context(self) -> CompressedContext | None:
        """The :class:`~ragzip.CompressedContext` of the most recent call: every passage's decision.

        Under concurrent use it is whichever call finished last; read the callback payload for per-call results.
        """
        return self._last_context

    def bind(self, llm: Any) -> RagzipPostprocessor:
        """Count tokens with ``llm``'s tokenizer and share its soft-token store.

        Soft compressors must be bound to the generator that reads them.

        Args:
            llm: The reader: a :class:`RagzipLLM` or an ``HFGenerator``.

        Returns:
            This postprocessor, for chaining.

        Raises:
            ConfigError: ``llm`` is neither ragzip's generator nor one of its LLM wrappers.
            SoftTokenError: a soft compressor's trained parts do not fit the reader's embedding space.
        """
        self._compressor.bind(generator_of(llm))
        track_store(self._compressor.store)
        return self

    # ---------------------------------------------------------------------------------------------- the work
    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        query = query_of(query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._start_payload(nodes, query)) as event:
            return self._finish(nodes, self._compressor.compress(query, passages_of(nodes)), event)

    async def _apostprocess_nodes(self, nodes: list[NodeWithScore],
                                  query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        """Compress in a worker thread; concurrent calls on one event loop are batched into one ``compress_batch``."""
        query = query_of(query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._start_payload(nodes, query)) as event:
            return self._finish(nodes, await self._batcher.compress(query, passages_of(nodes)), event)

    def _start_payload(self, nodes: list[NodeWithScore], query: str) -> dict[Any, Any]:
        return {EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.method, EventPayload.QUERY_STR: query}

    def _finish(self, nodes: list[NodeWithScore], context: CompressedContext, event: Any) -> list[NodeWithScore]:
        self._last_context = context
        info = {**log_report(context, self.class_name()), "context": context}
        if context.soft and self.guard_foreign_llms:
            SoftTokenGuard.install(self.callback_manager)
        out = nodes_of(nodes, context, keep_dropped=self.keep_dropped)
        event.on_end(payload={EventPayload.NODES: out, METADATA_KEY: info})
        return out
