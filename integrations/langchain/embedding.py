"""ragzip's embedder as LangChain embeddings."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from ragzip.integrations._common import resolve_embedder
from ragzip.quiet import quiet_dependencies

__all__ = ["RagzipEmbeddings"]


class RagzipEmbeddings(Embeddings):
    """ragzip's embedder (``embedded:minilm`` by default) as LangChain embeddings.

    Args:
        embedder: A :class:`ragzip.embed.Embedder`.
        spec: Or the model to load: ``embedded:minilm``, a sentence-transformers HF id or a local path.

    Example:
        >>> emb = RagzipEmbeddings(spec="embedded:minilm")  # doctest: +SKIP
        >>> len(emb.embed_query("Who designed the Eiffel Tower?"))  # doctest: +SKIP
        384
    """

    def __init__(self, embedder: Any = None, *, spec: str | None = None) -> None:
        with quiet_dependencies():
            self.embedder = resolve_embedder(embedder, spec, who="RagzipEmbeddings")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed ``texts`` in one batch: one unit-norm vector per text, in order (``[]`` for no texts)."""
        if not texts:
            return []
        with quiet_dependencies():
            return [list(map(float, row)) for row in self.embedder.encode(list(texts))]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query as a unit-norm vector.

        Raises:
            InputError: ``text`` is not a string.
        """
        with quiet_dependencies():
            return np.asarray(self.embedder.encode_query(text), dtype=np.float32).reshape(-1).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` in a worker thread, so the event loop is not blocked while the model runs."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` in a worker thread, so the event loop is not blocked while the model runs."""
        return await asyncio.to_thread(self.embed_query, text)
