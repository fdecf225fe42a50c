"""LangChain documents as ragzip passages, compressed results back as copies of the documents (never merged), and the
per-call report as a custom callback event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.callbacks.manager import Callbacks
from langchain_core.documents import Document

from ragzip.errors import InputError
from ragzip.integrations._common import METADATA_KEY, outputs, passage_from, with_record
from ragzip.types import CompressedContext, Passage

CUSTOM_EVENT = "ragzip_compression"
"""Name of the custom callback event each compression call dispatches (data: the per-call report)."""


def passages_of(documents: Sequence[Document]) -> list[Passage]:
    """The documents as ragzip passages (id, metadata and the retrieval score a retriever put in the metadata)."""
    return [passage_from(d.page_content, id=d.id, metadata=d.metadata, score=_score(d.metadata)) for d in documents]


def documents_of(documents: Sequence[Document], context: CompressedContext, *, keep_dropped: bool) -> list[Document]:
    """What the compressor returns: copies of the input documents holding their compressed text (or a summary)."""
    return [doc.model_copy(update={"page_content": text, "metadata": with_record(doc.metadata, record)})
            if doc is not None else Document(page_content=text, metadata={METADATA_KEY: record})
            for doc, text, record in outputs(documents, context, keep_dropped=keep_dropped)]


def _score(metadata: Mapping[str, Any]) -> float | None:
    for key in ("relevance_score", "score", "query_similarity_score"):
        value = metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# ------------------------------------------------------------------------------------------------- callbacks
def _manager(callbacks: Callbacks | None) -> CallbackManager | AsyncCallbackManager | None:
    if isinstance(callbacks, (CallbackManager, AsyncCallbackManager)):
        return callbacks if callbacks.handlers else None
    if isinstance(callbacks, list) and callbacks:  # handlers passed directly
        return CallbackManager(handlers=list(callbacks))
    return None


def dispatch(callbacks: Callbacks | None, info: dict[str, Any]) -> None:
    """Send the per-call report as the :data:`CUSTOM_EVENT` custom event to ``callbacks`` (sync managers only)."""
    manager = _manager(callbacks)
    if isinstance(manager, CallbackManager):
        manager.on_custom_event(CUSTOM_EVENT, info, run_id=manager.parent_run_id)


async def adispatch(callbacks: Callbacks | None, info: dict[str, Any]) -> None:
    """Send the per-call report as the :data:`CUSTOM_EVENT` custom event to ``callbacks``."""
    manager = _manager(callbacks)
    if isinstance(manager, AsyncCallbackManager):
        await manager.on_custom_event(CUSTOM_EVENT, info, run_id=manager.parent_run_id)
    elif manager is not None:
        manager.on_custom_event(CUSTOM_EVENT, info, run_id=manager.parent_run_id)


def unpack_input(inputs: Any) -> tuple[Sequence[Document], str]:
    """``(documents, query)`` from the input of :meth:`RagzipCompressor.as_runnable`."""
    if isinstance(inputs, dict):
        query = inputs.get("query", inputs.get("question"))
        docs = inputs.get("documents", inputs.get("docs"))
        if query is not None and docs is not None:
            return docs, query
    elif isinstance(inputs, (tuple, list)) and len(inputs) == 2 and isinstance(inputs[0], str):
        return inputs[1], inputs[0]
    raise InputError("RagzipCompressor.as_runnable() takes {'query': str, 'documents': [Document, ...]} or a "
                     f"(query, documents) pair, got {type(inputs).__name__}.")
