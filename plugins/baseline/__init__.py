"""Baselines: ``none`` (pass-through) and ``truncate`` (the first N tokens of the concatenated passages)."""

from __future__ import annotations

from ragzip.compressor import register_compressor
from ragzip.plugins.baseline.compressor import NoneCompressor, TruncateCompressor
from ragzip.plugins.baseline.config import NoneConfig, TruncateConfig

__all__ = ["NoneCompressor", "NoneConfig", "TruncateCompressor", "TruncateConfig"]

register_compressor(NoneCompressor, baseline=True, bench_default=True)
register_compressor(TruncateCompressor, baseline=True, bench_default=True, demo={"max_tokens": 96}, budget="max_tokens",
                    equal_budget=True, aliases={"": "max_tokens", "n": "max_tokens"})
