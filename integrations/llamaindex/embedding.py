"""ragzip's embedder as a LlamaIndex embedding model."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr

from ragzip.integrations._common import resolve_embedder
from ragzip.quiet import quiet_dependencies

__all__ = ["RagzipEmbedding"]


class RagzipEmbedding(BaseEmbedding):
    """ragzip's embedder (``embedded:minilm`` by default) as a LlamaIndex embedding model.

    Use the same embedder as ragzip's FAISS index (xRAG reuses the index's vectors).

    Args:
        embedder: A :class:`ragzip.embed.Embedder`.
        spec: Or the model to load: ``embedded:minilm``, a sentence-transformers HF id or a local path.

    Example:
        >>> emb = RagzipEmbedding(spec="embedded:minilm")  # doctest: +SKIP
        >>> len(emb.get_query_embedding("Who designed the Eiffel Tower?"))  # doctest: +SKIP
        384
    """

    _embedder: Any = PrivateAttr()

    def __init__(self, embedder: Any = None, *, spec: str | None = None, **kwargs: Any) -> None:
        with quiet_dependencies():
            built = resolve_embedder(embedder, spec, who="RagzipEmbedding")
        kwargs.setdefault("model_name", str(getattr(built, "name", spec or "embedded:minilm")))
        super().__init__(**kwargs)
        self._embedder = built

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this component under."""
        return "RagzipEmbedding"

    @property
    def embedder(self) -> Any:
        """The wrapped :class:`ragzip.embed.Embedder`."""
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        with quiet_dependencies():
            return np.asarray(self._embedder.encode_query(query), dtype=np.float32).reshape(-1).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with quiet_dependencies():
            return [list(map(float, row)) for row in self._embedder.encode(list(texts))]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
