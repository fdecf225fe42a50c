"""``extractive``: EXIT-style context-aware sentence selection with a classifier trained by ragzip.

Each sentence is scored with the query and the passage it belongs to; the kept sentences stay in their original
order. The default backbone is a MiniLM cross-encoder trained on HotpotQA (shipped in ``artifacts/default``);
EXIT's Gemma classifier and RECOMP's dual encoder load through the same interface (``backbone: exit|recomp``).
"""

from __future__ import annotations

from ragzip.compressor import register_compressor
from ragzip.plugins.extractive.compressor import ExtractiveCompressor
from ragzip.plugins.extractive.config import ExtractiveConfig

__all__ = ["ExtractiveCompressor", "ExtractiveConfig"]

register_compressor(ExtractiveCompressor, budget="max_tokens", bench_default=True, aliases={"t": "threshold"})
