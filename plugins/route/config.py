"""Options of the ``route`` compressor (YAML ``type: route``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ragzip.compressor import CompressorConfig
from ragzip.config_utils import check_range
from ragzip.errors import ConfigError

WHERE = "compressor[route]"
# The extractive stage's selection is the router's: these keys belong to the route config, not its `extractive` block.
ROUTED_KEYS = ("type", "max_tokens", "top_k", "selective", "selective_rule", "tokenizer")


@dataclass
class RouteConfig(CompressorConfig):
    """The ``route`` compressor: per passage, the cheapest form that keeps its evidence under one token budget.

    The forms are its best sentences as text, one xRAG soft token, or nothing.

    Example:
        >>> RouteConfig(max_tokens=64).max_soft
        2
    """

    max_tokens: int = field(
        default=128,
        metadata={"help": "Budget of what the generator reads for a question: text tokens plus soft-token positions "
                          "(one per soft token, plus the tokens of xrag's `context_template` around it)."},
    )
    max_soft: int = field(
        default=2,
        metadata={"help": "At most this many passages per question become soft tokens (the shipped xRAG projector "
                          "was trained on 1-3 passages); 0 turns the router into extractive selection."},
    )
    soft_min_score: float | None = field(
        default=None,
        metadata={"help": "A passage that gets no text is read as a soft token only if its best sentence scores at "
                          "least this (passages below it are dropped). Empty: the extractive model's calibrated "
                          "evidence threshold."},
    )
    extractive: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Options of the extractive scorer (`model`, `dtype`, `threshold`, ...), as under "
                          "`type: extractive`; its budget is the router's `max_tokens`."},
    )
    xrag: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Options of the xRAG projector (`artifact`, `context_template`, ...), as under "
                          "`type: xrag`."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(WHERE, "max_tokens", self.max_tokens, 1)
        check_range(WHERE, "max_soft", self.max_soft, 0)
        if self.soft_min_score is not None:
            check_range(WHERE, "soft_min_score", self.soft_min_score, 0.0, 1.0)
        for block in ("extractive", "xrag"):
            value = getattr(self, block)
            if not isinstance(value, dict):
                raise ConfigError(f"{WHERE}.{block} must be a mapping of {block} options, e.g. "
                                  f"`{block}: {{}}`, got {type(value).__name__}.")
            if "type" in value:
                raise ConfigError(f"{WHERE}.{block}.type: the block is already the {block} stage; remove `type`.")
        taken = sorted(set(self.extractive) & set(ROUTED_KEYS))
        if taken:
            raise ConfigError(f"{WHERE}.extractive sets {', '.join(taken)}, which the router decides: set the "
                              "budget as the route's own `max_tokens` (and leave selection to the router).")
