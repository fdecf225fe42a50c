"""xRAG (arXiv 2405.13792): one soft token per passage, the retriever embedding mapped by a trained projector.

YAML::

    compressor:
      type: xrag
      artifact: default          # MiniLM -> SmolLM2-135M projector shipped with ragzip
      max_passages: 10
      context_template: "{soft}"

Only ragzip's generator (``ragzip.generation.HFGenerator`` and its LlamaIndex/LangChain wrappers) reads the output.
"""

from __future__ import annotations

from ragzip.compressor import register_compressor
from ragzip.plugins.xrag.compressor import XRAGCompressor
from ragzip.plugins.xrag.config import ProjectorConfig, XRAGConfig
from ragzip.plugins.xrag.modeling import Projector, XRAGProjector

__all__ = ["Projector", "ProjectorConfig", "XRAGCompressor", "XRAGConfig", "XRAGProjector"]

register_compressor(XRAGCompressor)
