"""Thin LlamaIndex and LangChain adapters over the ragzip core.

Importing this package imports neither framework: each adapter module loads its framework when it is imported (or
when one of the names below is first used), and says which extra to install when it is missing.

* ``ragzip.integrations.llamaindex``: ``RagzipPostprocessor`` (node postprocessor), ``RagzipLLM``,
  ``RagzipEmbedding``, ``SoftTokenGuard``. Needs ``pip install 'ragzip[llamaindex]'``.
* ``ragzip.integrations.langchain``: ``RagzipCompressor`` (document compressor), ``RagzipLLM``, ``RagzipChatModel``,
  ``RagzipEmbeddings``, ``SoftTokenGuard``, ``install_soft_token_guard``. Needs ``pip install 'ragzip[langchain]'``.

``RagzipLLM`` and ``SoftTokenGuard`` exist in both frameworks: import them from the framework's module.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RagzipPostprocessor": "llamaindex",
    "RagzipEmbedding": "llamaindex",
    "RagzipCompressor": "langchain",
    "RagzipChatModel": "langchain",
    "RagzipEmbeddings": "langchain",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"ragzip.integrations.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'ragzip.integrations' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
