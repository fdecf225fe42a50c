"""ragzip: compress retrieved context for retrieval-augmented generation.

The public names are the ones in ``__all__``: the compressor contract and registry (``build_compressor``,
``Compressor``), the data types (``Passage``, ``CompressedContext``, ``PassageResult``, ``Unit``, ``StageResult``), the
pipeline (``RAGPipeline``, ``Answer``, ``load_config``) and the corpus helpers (``load_corpus``, ``chunk_passages``).

Example:
    >>> import ragzip
    >>> compressor = ragzip.build_compressor({"type": "truncate", "max_tokens": 2, "tokenizer": "whitespace"})
    >>> compressor.compress("Who?", ["Ada Lovelace wrote programs."]).text
    'Ada Lovelace'
"""

from __future__ import annotations

from ragzip.compressor import (
    ChainCompressor,
    Compressor,
    CompressorConfig,
    build_compressor,
    register_compressor,
    registered_compressors,
)
from ragzip.config import RagzipConfig, load_config
from ragzip.corpus import chunk_passages, load_corpus
from ragzip.errors import (
    ConfigError,
    IndexCorruptError,
    InputError,
    MissingDependencyError,
    ModelNotFoundError,
    RagzipError,
    SoftTokenError,
)
from ragzip.pipeline import Answer, RAGPipeline
from ragzip.quiet import quiet_dependencies
from ragzip.softstore import SoftTokenStore, default_store
from ragzip.types import CompressedContext, Passage, PassageResult, SoftSegment, StageResult, Unit

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "ChainCompressor",
    "CompressedContext",
    "Compressor",
    "CompressorConfig",
    "ConfigError",
    "IndexCorruptError",
    "InputError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "Passage",
    "PassageResult",
    "RAGPipeline",
    "RagzipConfig",
    "RagzipError",
    "SoftSegment",
    "SoftTokenError",
    "SoftTokenStore",
    "StageResult",
    "Unit",
    "__version__",
    "build_compressor",
    "chunk_passages",
    "default_store",
    "load_config",
    "load_corpus",
    "quiet_dependencies",
    "register_compressor",
    "registered_compressors",
]
