"""Options of the ``extractive`` compressor (YAML ``type: extractive``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragzip.compressor import CompressorConfig
from ragzip.config_utils import check_choice, check_range
from ragzip.errors import ConfigError

BACKBONES = ("crossencoder", "exit", "recomp")
DEFAULT_MODELS = {
    "crossencoder": "default",
    "exit": "doubleyyh/exit-gemma-2b",
    "recomp": "fangyuan/hotpotqa_extractive_compressor",
}
DEFAULT_WINDOWS = {"crossencoder": 0, "exit": 1024, "recomp": 256}  # 0: the window the artifact was trained with
_WHERE = "compressor[extractive]"


@dataclass
class ExtractiveConfig(CompressorConfig):
    """Keep the sentences a classifier finds useful for the query, in their original order.

    Example:
        >>> ExtractiveConfig(max_tokens=200, neighbors=1).backbone
        'crossencoder'
    """

    backbone: str = field(
        default="crossencoder",
        metadata={"help": "Sentence scorer: `crossencoder` (ragzip's trained MiniLM classifier, CPU-fast), `exit` "
                          "(EXIT's Gemma Yes/No classifier; needs the HF hub and `peft`), or `recomp` (RECOMP's "
                          "dual encoder: dot product, pick with top_k)."},
    )
    model: str = field(
        default="default",
        metadata={"help": "Model of the backbone: `default` (crossencoder: the artifact shipped in ragzip; exit: "
                          "doubleyyh/exit-gemma-2b; recomp: fangyuan/hotpotqa_extractive_compressor), a local "
                          "folder or a Hugging Face id."},
    )
    base_model: str = field(
        default="",
        metadata={"help": "exit only: the causal LM a LoRA adapter applies to; empty reads it from the adapter "
                          "config (google/gemma-2b-it for EXIT)."},
    )
    threshold: float | None = field(
        default=None,
        metadata={"help": "Keep sentences with P(useful) >= threshold. Empty: the model's own default (the "
                          "shipped crossencoder stores the value calibrated on held-out training questions; 0.5 "
                          "for exit; none for recomp). Set 0 to select by max_tokens/top_k alone."},
    )
    max_tokens: int | None = field(
        default=None,
        metadata={"help": "Token budget for the whole context of a question (generator tokens): the best-scoring "
                          "sentences of all passages fill it (original order kept). Without `threshold`/`relative` "
                          "the budget alone decides; with them, only passing sentences are candidates."},
    )
    relative: float | None = field(
        default=None,
        metadata={"help": "Query-adaptive rule: keep sentences scoring >= relative x the question's best score "
                          "(0-1). Empty: the model's calibrated value when neither threshold, max_tokens nor top_k "
                          "is set."},
    )
    retrieval_prior: float = field(
        default=0.5,
        metadata={"help": "Under a budget (max_tokens/top_k): weight of the retriever's ranking. A sentence is "
                          "ranked by its score + retrieval_prior / its passage's rank in retrieval order (1 = the "
                          "first passage; retrievers and rerankers put their best first), so the best-retrieved "
                          "passage keeps its sentences first; thresholds still read the plain score. Applies only when "
                          "every passage has a finite retrieval score and they are not all equal (`Passage.score`, a "
                          "LlamaIndex node's score, a LangChain document's relevance_score/score metadata); 0 turns "
                          "it off. 0.5 was calibrated on held-out NQ training questions (FAISS top-5)."},
    )
    top_k: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many sentences per question (the best-scoring ones; neighbours "
                          "added by `neighbors` do not count)."},
    )
    neighbors: int = field(
        default=0,
        metadata={"help": "Also keep this many sentences on each side of every selected sentence (same passage)."},
    )
    selective: bool = field(
        default=False,
        metadata={"help": "If no sentence passes the threshold, return an empty context (answer without "
                          "retrieval) instead of keeping the single best sentence."},
    )
    selective_rule: str = field(
        default="threshold",
        metadata={"help": "With selective: what decides 'no evidence here': 'threshold' (no sentence reaches the "
                          "threshold, by default the model's calibrated one) or 'set_gate' (the set-level relevance "
                          "gate fitted beside the model, set_gate.json, reads the scores of every sentence; the "
                          "budget or relative rule then selects as usual)."},
    )
    window: int = field(
        default=0,
        metadata={"help": "Model input length in tokens; 0 = the backbone's default (crossencoder: as trained, "
                          "256; exit: 1024; recomp: 256). Longer passages are scored in overlapping windows "
                          "(crossencoder) or with their context cut around the sentence (exit)."},
    )
    batch_size: int = field(default=16, metadata={"help": "Model inputs per forward pass."})
    use_title: bool = field(
        default=True,
        metadata={"help": "Give the classifier the passage's `metadata['title']` (if any) as unscored context."},
    )
    max_sentence_chars: int = field(
        default=1000,
        metadata={"help": "Sentence splitter: text with no boundary is cut into pieces of at most this many "
                          "characters (at a clause mark or space when there is one)."},
    )
    device: str = field(default="", metadata={"help": "torch device; empty: cuda if available, else cpu."})
    dtype: str = field(
        default="auto",
        metadata={"help": "Model weights: `auto` (float32 on cpu, bfloat16 for exit on cuda), `float32`, "
                          "`bfloat16`, `float16`, or `int8` (crossencoder on a CPU: dynamic quantization, about "
                          "twice as fast)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(_WHERE, "backbone", self.backbone, BACKBONES)
        check_choice(_WHERE, "dtype", self.dtype, ("auto", "float32", "bfloat16", "float16", "int8"))
        if self.dtype == "int8" and self.backbone != "crossencoder":
            raise ConfigError(f"{_WHERE}.dtype 'int8' is for backbone crossencoder (dynamic quantization on a CPU); "
                              f"backbone {self.backbone!r} takes auto, float32, bfloat16 or float16.")
        if not self.model.strip():
            raise ConfigError(f"{_WHERE}.model is empty; use `default`, a local folder or a Hugging Face id.")
        if self.threshold is not None and self.backbone != "recomp":
            check_range(_WHERE, "threshold", self.threshold, 0.0, 1.0)
        if self.max_tokens is not None:
            check_range(_WHERE, "max_tokens", self.max_tokens, 0)
        if self.relative is not None:
            check_range(_WHERE, "relative", self.relative, 0.0, 1.0)
        if self.top_k is not None:
            check_range(_WHERE, "top_k", self.top_k, 1)
        check_range(_WHERE, "neighbors", self.neighbors, 0)
        check_range(_WHERE, "retrieval_prior", self.retrieval_prior, 0.0)
        check_choice(_WHERE, "selective_rule", self.selective_rule, ("threshold", "set_gate"))
        if self.selective_rule == "set_gate" and not self.selective:
            raise ConfigError(f"{_WHERE}.selective_rule 'set_gate' decides when `selective` returns no context; set "
                              "selective: true with it (or leave selective_rule at 'threshold').")
        check_range(_WHERE, "batch_size", self.batch_size, 1)
        check_range(_WHERE, "max_sentence_chars", self.max_sentence_chars, 16)
        if self.window:
            check_range(_WHERE, "window", self.window, 64)
        if self.backbone == "recomp" and self.threshold is None and self.top_k is None and self.max_tokens is None:
            raise ConfigError(
                f"{_WHERE}: backbone 'recomp' ranks sentences by a dot product, not a probability, so it needs "
                "`top_k` (RECOMP keeps 2 sentences for HotpotQA) or `max_tokens`, e.g. "
                "`{type: extractive, backbone: recomp, top_k: 2}`."
            )

    @property
    def model_spec(self) -> str:
        """The model to load: ``model``, with ``default`` replaced by the backbone's default."""
        return DEFAULT_MODELS[self.backbone] if self.model == "default" else self.model
