"""ragzip: compress retrieved context for retrieval-augmented generation.

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
from ragzip.errors import (
    ConfigError,
    IndexCorruptError,
    InputError,
    MissingDependencyError,
    ModelNotFoundError,
    RagzipError,
    SoftTokenError,
)
from ragzip.softstore import SoftTokenStore, default_store
from ragzip.types import CompressedContext, Passage, PassageResult, SoftSegment, Unit

__version__ = "0.1.0"

__all__ = [
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
    "RagzipError",
    "SoftSegment",
    "SoftTokenError",
    "SoftTokenStore",
    "Unit",
    "__version__",
    "build_compressor",
    "default_store",
    "register_compressor",
    "registered_compressors",
]
