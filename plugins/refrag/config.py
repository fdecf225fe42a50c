"""Configs of the ``refrag`` compressor (the YAML block) and of its trained artifact (``config.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ragzip.compressor import CompressorConfig
from ragzip.config_utils import check_choice, check_range
from ragzip.errors import ConfigError

WHERE = "compressor[refrag]"
POLICIES = ("learned", "random", "perplexity", "none")
POOLINGS = ("mean",)


def check_p(where: str, p: Any) -> float:
    """The expansion budget must be a number in [0, 1]; the error says what it means and how to fix it."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise ConfigError(f"{where}.p = {p!r} must be a number in [0, 1]: the fraction of chunks kept as raw tokens.")
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"{where}.p = {p!r} is out of range: p is the fraction of chunks expanded to raw tokens and "
                          "must lie in [0, 1] (0 compresses every chunk, 1 expands every chunk).")
    return float(p)


def check_k(where: str, k: Any) -> int:
    """The chunk length ``k`` must be a positive integer; returns it, or raises a ``ConfigError`` that says why."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{where}.k = {k!r} must be a positive integer: the tokens per chunk (REFRAG uses 8, 16 "
                          "or 32).")
    return k


@dataclass
class RefragConfig(CompressorConfig):
    """The ``refrag`` compressor: passages cut into k-token chunks, each compressed to one soft token.

    A policy keeps a fraction ``p`` of the chunks as raw tokens (REFRAG's compress -> sense -> expand).

    Example:
        >>> RefragConfig(k=16, p=0.25, policy="learned").p
        0.25
    """

    artifact: str = field(
        default="default",
        metadata={"help": "Trained encoder top layer, projector and policy: 'default' (shipped, MiniLM -> "
                          "SmolLM2-135M, k=16) or a folder written by `ragzip train refrag`."},
    )
    k: int = field(
        default=16,
        metadata={"help": "Generator tokens per chunk (REFRAG: 8, 16 or 32). A k other than the artifact's runs, "
                          "with a warning: the projector was trained on k-token chunks."},
    )
    p: float = field(
        default=0.25,
        metadata={"help": "Expansion budget: the fraction of a question's chunks kept as raw tokens, in [0, 1]."},
    )
    policy: str = field(
        default="learned",
        metadata={"help": "Which chunks to expand: 'learned' (the trained RL policy), 'random', 'perplexity' "
                          "(highest decoder perplexity first; costs a decoder pass over the passages) or 'none' "
                          "(compress every chunk; p is ignored)."},
    )
    cache: str = field(
        default="",
        metadata={"help": "Chunk-embedding cache: a FAISS index folder (its refrag-<encoder>-k<k>/ cache is used) or "
                          "the cache folder itself; empty encodes every chunk on the fly. A cache built with another "
                          "encoder, k or artifact is refused."},
    )
    generator: str = field(
        default="embedded:smollm2-135m",
        metadata={"help": "The decoder that reads the soft tokens (tokenizes the chunks, names the embedding space). "
                          "Set from the generator when the compressor is bound to one."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the 'random' policy (per question, reproducible)."})
    batch_size: int = field(default=64, metadata={"help": "Chunks per encoder forward pass."})
    device: str | None = field(
        default=None, metadata={"help": "Torch device of the encoder and projector; empty means the generator's."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.artifact, str) or not self.artifact.strip():
            raise ConfigError(f"{WHERE}.artifact = {self.artifact!r} must be 'default' or a folder written by "
                              "`ragzip train refrag`.")
        check_k(WHERE, self.k)
        self.p = check_p(WHERE, self.p)
        check_choice(WHERE, "policy", self.policy, POLICIES)
        if not isinstance(self.cache, str):
            raise ConfigError(f"{WHERE}.cache = {self.cache!r} must be a folder path, or empty for no cache.")
        if not isinstance(self.generator, str) or not self.generator.strip():
            raise ConfigError(f"{WHERE}.generator = {self.generator!r} must be a model spec, e.g. "
                              "'embedded:smollm2-135m'.")
        check_range(WHERE, "batch_size", self.batch_size, 1)
        if self.device == "":
            self.device = None


@dataclass
class RefragModelConfig:
    """``config.json`` of a trained REFRAG artifact: the base models it builds on and the shapes of what was trained.

    Only the trained parameters are stored in ``model.safetensors`` (the encoder's top ``encoder_trained_layers``
    layers, the projector and the policy); the base encoder and the decoder are named, never copied.
    """

    encoder: str = field(default="embedded:minilm", metadata={"help": "Base chunk encoder (a BERT-like model)."})
    encoder_hidden: int = field(default=384, metadata={"help": "Width of the encoder's hidden states."})
    encoder_trained_layers: int = field(
        default=1, metadata={"help": "How many of the encoder's top layers were trained (and are stored)."}
    )
    encoder_max_length: int = field(default=96, metadata={"help": "Most encoder tokens read per chunk."})
    pooling: str = field(default="mean", metadata={"help": "How a chunk's encoder states become one vector."})
    decoder: str = field(
        default="embedded:smollm2-135m", metadata={"help": "The decoder whose input-embedding space it maps into."}
    )
    decoder_hidden: int = field(default=576, metadata={"help": "The decoder's input-embedding width."})
    k: int = field(default=16, metadata={"help": "Decoder tokens per chunk it was trained on."})
    projector_hidden: int = field(default=1152, metadata={"help": "Width of the projector's hidden layer."})
    policy_hidden: int = field(default=128, metadata={"help": "Width of the expansion policy's hidden layer."})
    decoder_lora_rank: int = field(
        default=0, metadata={"help": "Rank of the decoder LoRA trained with the artifact; 0: the decoder is read "
                                     "frozen (no adapter; every artifact before the LoRA existed)."}
    )
    decoder_lora_alpha: float = field(default=16.0, metadata={"help": "The LoRA delta is scaled by alpha / rank."})
    decoder_lora_targets: dict[str, list[int]] = field(
        default_factory=dict,
        metadata={"help": "Adapted linear maps of each decoder layer, by name, with their [in, out] features."},
    )
    decoder_lora_layers: int = field(default=0, metadata={"help": "How many decoder layers carry the adapter."})
    decoder_lora_base: str = field(
        default="", metadata={"help": "Fingerprint of the decoder weights the adapter is a delta on (checked at bind)."}
    )
    ragzip_version: str = field(default="", metadata={"help": "ragzip version that wrote the artifact."})
    training: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "How it was trained: data, steps, seed, losses (informative)."}
    )

    def __post_init__(self) -> None:
        where = "refrag artifact config.json"
        for name in ("encoder_hidden", "encoder_max_length", "decoder_hidden", "projector_hidden", "policy_hidden"):
            check_range(where, name, getattr(self, name), 1)
        check_range(where, "encoder_trained_layers", self.encoder_trained_layers, 0)
        check_k(where, self.k)
        check_choice(where, "pooling", self.pooling, POOLINGS)
        check_range(where, "decoder_lora_rank", self.decoder_lora_rank, 0)
        if self.decoder_lora_rank:
            check_range(where, "decoder_lora_layers", self.decoder_lora_layers, 1)
            shapes = self.decoder_lora_targets
            if not isinstance(shapes, dict) or not shapes or not all(
                    isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(n, int) and n > 0 for n in v)
                    for v in shapes.values()):
                raise ConfigError(f"{where}.decoder_lora_targets = {shapes!r} must map each adapted linear map's "
                                  "name to its [in, out] features, e.g. {'q_proj': [576, 576]}; retrain with "
                                  "`ragzip train refrag`.")
