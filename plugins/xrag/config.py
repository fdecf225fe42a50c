"""Configs of the ``xrag`` compressor (the YAML block) and of its trained artifact (``config.json`` beside the weights)."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from ragzip.compressor import CompressorConfig
from ragzip.config_utils import check_choice, check_range
from ragzip.errors import ConfigError

WHERE = "compressor[xrag]"
POOLINGS = ("sentence-transformers", "last-token")
PROJECTOR_TYPES = ("mlp2x_gelu",)
CONTEXT_SLOTS = ("soft", "title")


def check_context_template(where: str, template: Any) -> None:
    """A per-passage template must be a valid format string with the ``{soft}`` slot (``{title}`` optional)."""
    if not isinstance(template, str):
        raise ConfigError(f"{where}.context_template must be a string, got {type(template).__name__}: {template!r}.")
    try:
        slots = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ConfigError(f"{where}.context_template = {template!r} is not a valid format string ({err}). "
                          "Write literal braces as '{{' and '}}'.") from None
    if slots.count("soft") != 1:
        raise ConfigError(f"{where}.context_template must contain the {{soft}} slot exactly once, got {template!r}. "
                          "Put {soft} where the passage's soft token goes, e.g. 'Background: {soft}'.")
    unknown = sorted(set(slots) - set(CONTEXT_SLOTS))
    if unknown:
        raise ConfigError(f"{where}.context_template has unknown slot(s) {', '.join('{' + s + '}' for s in unknown)}; "
                          f"allowed: {{soft}}, {{title}}. Write literal braces as '{{{{' and '}}}}'.")


@dataclass
class XRAGConfig(CompressorConfig):
    """The ``xrag`` compressor: one soft token per passage, the retriever embedding mapped by a trained projector.

    Example:
        >>> XRAGConfig(max_passages=3).context_template
        '{soft}'
    """

    artifact: str = field(
        default="default",
        metadata={"help": "Trained projector: 'default' (shipped, MiniLM -> SmolLM2-135M), a folder written by "
                          "`ragzip train xrag`, or 'Hannibal046/xrag-7b' (the published checkpoint; needs the hub)."},
    )
    embedder: str | None = field(
        default=None,
        metadata={"help": "Embedder of the passages; empty means the artifact's. It must be the one the projector "
                          "was trained with (checked)."},
    )
    max_passages: int = field(
        default=10,
        metadata={"help": "Most passages per question; more is an error (the projector was trained on 1-3)."},
    )
    context_template: str = field(
        default="{soft}",
        metadata={"help": "What the generator reads for each passage; must contain {soft} (its one soft token), "
                          "may contain {title}. Passages are joined by blank lines into the generator's {context}."},
    )
    reencode: bool = field(
        default=True,
        metadata={"help": "Re-encode passages whose embedding is missing or comes from another embedder; false "
                          "makes that an error (every passage must carry the index's embedding)."},
    )
    device: str | None = field(
        default=None, metadata={"help": "Torch device of the projector and embedder; empty means the generator's."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.artifact, str) or not self.artifact.strip():
            raise ConfigError(f"{WHERE}.artifact = {self.artifact!r} must be 'default', a folder or a Hugging Face id.")
        if self.embedder is not None and (not isinstance(self.embedder, str) or not self.embedder.strip()):
            raise ConfigError(f"{WHERE}.embedder = {self.embedder!r} must be a model spec such as 'embedded:minilm', "
                              "or empty for the artifact's embedder.")
        check_range(WHERE, "max_passages", self.max_passages, 1)
        check_context_template(WHERE, self.context_template)
        if self.device == "":
            self.device = None


@dataclass
class ProjectorConfig:
    """``config.json`` of a trained xRAG projector: what it maps from and to, and how it was trained.

    Only the projector is stored (``model.safetensors``); the embedder and the generator are named, never copied.
    """

    embedder: str = field(
        default="embedded:minilm", metadata={"help": "The embedder whose passage vectors the projector reads."}
    )
    embedder_dim: int = field(default=384, metadata={"help": "Width of the embedder's vectors."})
    pooling: str = field(
        default="sentence-transformers",
        metadata={"help": "How passage vectors are made: 'sentence-transformers' (ragzip.Embedder, L2-normalised) or "
                          "'last-token' (a decoder's last hidden state, as SFR-Embedding-Mistral in xRAG)."},
    )
    normalize: bool = field(default=True, metadata={"help": "Whether passage vectors are L2-normalised."})
    embedder_max_length: int = field(
        default=256, metadata={"help": "Most embedder tokens per passage (last-token pooling truncates here)."}
    )
    generator: str = field(
        default="embedded:smollm2-135m", metadata={"help": "The generator whose input-embedding space it maps into."}
    )
    generator_hidden: int = field(default=576, metadata={"help": "The generator's hidden (input-embedding) size."})
    projector_type: str = field(default="mlp2x_gelu", metadata={"help": "Linear -> GELU -> Linear, as in xRAG."})
    intermediate_size: int = field(
        default=0, metadata={"help": "Width of the hidden layer; 0 means generator_hidden (xRAG's choice)."}
    )
    context_template: str = field(
        default="{soft}", metadata={"help": "The per-passage template the projector was trained with."}
    )
    ragzip_version: str = field(default="", metadata={"help": "ragzip version that wrote the artifact."})
    training: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "How it was trained: data, steps, seed, losses (informative)."}
    )

    def __post_init__(self) -> None:
        where = "xrag artifact config.json"
        check_range(where, "embedder_dim", self.embedder_dim, 1)
        check_range(where, "generator_hidden", self.generator_hidden, 1)
        check_range(where, "embedder_max_length", self.embedder_max_length, 1)
        check_range(where, "intermediate_size", self.intermediate_size, 0)
        check_choice(where, "pooling", self.pooling, POOLINGS)
        check_choice(where, "projector_type", self.projector_type, PROJECTOR_TYPES)
        check_context_template(where, self.context_template)
        if self.intermediate_size == 0:
            self.intermediate_size = self.generator_hidden
