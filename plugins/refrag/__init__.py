"""``refrag``: REFRAG's compress -> sense -> expand (Lin et al., arXiv 2509.01092), re-implemented by ragzip.

No official REFRAG code or weights exist; the encoder top layer, projector and expansion policy shipped in
``artifacts/default`` were trained by ragzip (see its MODEL_CARD.md). Chunk vectors can be cached beside a FAISS index
with :func:`build_refrag_cache`.
"""

from __future__ import annotations

from ragzip.compressor import Command, IndexCache, register_compressor
from ragzip.plugins.refrag.cache import CacheMismatchError, ChunkCache, build_refrag_cache
from ragzip.plugins.refrag.compressor import RefragCompressor
from ragzip.plugins.refrag.config import RefragConfig, RefragModelConfig
from ragzip.plugins.refrag.modeling import Chunk, RefragModel, chunk_passage

__all__ = [
    "CacheMismatchError",
    "Chunk",
    "ChunkCache",
    "RefragCompressor",
    "RefragConfig",
    "RefragModel",
    "RefragModelConfig",
    "build_refrag_cache",
    "chunk_passage",
]

register_compressor(
    RefragCompressor,
    index_cache=IndexCache("ragzip.plugins.refrag.cache:build_refrag_cache",
                           "also cache REFRAG chunk embeddings beside the index", options=("k",)),
    commands={"ttft": Command("ragzip.plugins.refrag.ttft", "time to first token: full context vs REFRAG")},
)
