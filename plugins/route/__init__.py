"""``route``: under one token budget, each passage becomes its best sentences (text), one xRAG soft token, or nothing.

YAML::

    compressor:
      type: route
      max_tokens: 128        # text tokens + soft-token positions read per question
      max_soft: 2            # passages per question that may become a soft token
      soft_min_score: null   # relevance a soft passage needs; empty: the extractive model's threshold
      extractive: {}         # options of the extractive scorer (model, dtype, ...)
      xrag: {}               # options of the xRAG projector (artifact, context_template, ...)

Only ragzip's generator (``ragzip.generation.HFGenerator`` and its LlamaIndex/LangChain wrappers) reads the output.
"""

from __future__ import annotations

from ragzip.compressor import register_compressor
from ragzip.plugins.route.compressor import RouteCompressor
from ragzip.plugins.route.config import RouteConfig

__all__ = ["RouteCompressor", "RouteConfig"]

register_compressor(RouteCompressor, trainer=False, demo=None, budget="max_tokens")
