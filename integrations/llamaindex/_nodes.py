"""LlamaIndex nodes as ragzip passages, and compressed results back as copies of the nodes (never merged)."""

from __future__ import annotations

from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode

from ragzip.integrations._common import METADATA_KEY, outputs, passage_from, with_record
from ragzip.types import CompressedContext, Passage, content_id


def passages_of(nodes: list[NodeWithScore]) -> list[Passage]:
    """The nodes as ragzip passages (id, metadata, retrieval score and embedding kept)."""
    # A node's embedding (when the vector store returns it) is the retriever's vector: xrag reuses it.
    return [passage_from(n.node.get_content(metadata_mode=MetadataMode.NONE), id=n.node.node_id,
                         metadata=n.node.metadata, score=n.score, embedding=n.node.embedding) for n in nodes]


def nodes_of(nodes: list[NodeWithScore], context: CompressedContext, *, keep_dropped: bool) -> list[NodeWithScore]:
    """What the postprocessor returns: copies of the input nodes holding their compressed text (or a summary node)."""
    return [NodeWithScore(node=copy_node(n.node, text, record), score=n.score) if n is not None
            else summary_node(nodes, text, record, context)
            for n, text, record in outputs(nodes, context, keep_dropped=keep_dropped)]


def copy_node(node: BaseNode, text: str, record: dict[str, Any]) -> BaseNode:
    """A copy of ``node`` holding ``text`` and the provenance ``record``; the input node is left untouched."""
    changed = text != node.get_content(metadata_mode=MetadataMode.NONE)
    new = node.model_copy(update={
        "metadata": with_record(node.metadata, record),
        "excluded_llm_metadata_keys": _exclude_key(node.excluded_llm_metadata_keys),
        "excluded_embed_metadata_keys": _exclude_key(node.excluded_embed_metadata_keys),
        "relationships": dict(node.relationships),
        "embedding": None if changed else node.embedding,  # the node's embedding described the old text
    })
    if changed:
        new.set_content(text)
    return new


def summary_node(nodes: list[NodeWithScore], text: str, record: dict[str, Any],
                 context: CompressedContext) -> NodeWithScore:
    """A new node holding a fused summary, scored as the best of the nodes it summarizes."""
    scores = [n.score for n in nodes if n.score is not None]
    node = TextNode(text=text, id_=f"ragzip-summary-{content_id(context.query + chr(0) + text)}",
                    metadata={METADATA_KEY: record}, excluded_llm_metadata_keys=[METADATA_KEY],
                    excluded_embed_metadata_keys=[METADATA_KEY])
    return NodeWithScore(node=node, score=max(scores) if scores else None)


def _exclude_key(keys: list[str] | None) -> list[str]:
    keys = list(keys or [])
    return keys if METADATA_KEY in keys else [*keys, METADATA_KEY]


def query_of(query_bundle: QueryBundle | None) -> str:
    """The query string of a postprocessor call; a clear error when there is none to compress for."""
    if query_bundle is None or not str(query_bundle.query_str or "").strip():
        raise ValueError("RagzipPostprocessor needs the query to compress for: call "
                         "`postprocess_nodes(nodes, query_str=...)` or pass a QueryBundle with a non-empty "
                         "`query_str` (query engines do this for you).")
    return query_bundle.query_str
