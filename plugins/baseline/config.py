"""Configs of the reference compressors: ``none`` (pass-through) and ``truncate`` (a budget in retrieval order)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragzip.compressor import CompressorConfig
from ragzip.config_utils import check_range


@dataclass
class NoneConfig(CompressorConfig):
    """The ``none`` compressor has no options of its own."""


@dataclass
class TruncateConfig(CompressorConfig):
    """The ``truncate`` compressor: the first ``max_tokens`` tokens of the passages, in retrieval order.

    Example:
        >>> TruncateConfig(max_tokens=128).max_tokens
        128
    """

    max_tokens: int = field(default=256, metadata={"help": "Keep the first N tokens of the passages, in order."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("compressor[truncate]", "max_tokens", self.max_tokens, 0)
