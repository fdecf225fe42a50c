"""Options of the ``abstractive`` compressor (the YAML ``compressor: {type: abstractive, ...}`` block)."""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from ragzip.compressor import CompressorConfig
from ragzip.config_utils import check_choice, check_range
from ragzip.errors import ConfigError

WHERE = "compressor[abstractive]"
DEFAULT_MODEL = "embedded:smollm2-135m"
RECOMP_TEMPLATE = "Question: {question}\n Document: {documents}\n Summary: "
BACKBONES = ("causal", "seq2seq")
ON_EMPTY = ("no_context", "keep_original")
ON_ECHO = ("truncate", "keep_original", "no_context")
LONG_INPUT = ("map_reduce", "truncate")
RELEVANCE_GATE = ("auto", "set", "extractive", "none")
INPUTS = ("auto", "extracted", "passages")
DEFAULT_EXTRACT_TOKENS = 160
# Largest gate threshold that left at most 5% of held-out *train* questions with their gold paragraphs empty (the
# 100 HotpotQA questions the shipped extractive classifier held out; 2 gold + 3 distractors vs 5 distractors):
# 5% / 38%, ROC AUC 0.82 (benchmarks/results/abstractive_gate_heldout_train.json).
DEFAULT_GATE_THRESHOLD = 0.65


@dataclass
class AbstractiveConfig(CompressorConfig):
    """RECOMP-style query-focused summarisation with selective augmentation.

    Example:
        >>> AbstractiveConfig(max_summary_tokens=64).on_empty
        'no_context'
    """

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Summarizer: an embedded name (embedded:smollm2-135m), a Hugging Face id (e.g. RECOMP's "
                          "fangyuan/hotpotqa_abstractive) or a local folder."},
    )
    backbone: str = field(
        default="causal",
        metadata={"help": "How the summarizer is built: 'causal' (decoder-only LM, the prompt is its prefix) or "
                          "'seq2seq' (encoder-decoder such as T5, the prompt is the encoder input)."},
    )
    adapter: str = field(
        default="auto",
        metadata={"help": "LoRA adapter folder (config.json + model.safetensors from `ragzip train abstractive`); "
                          "'auto' = the shipped adapter when `model` is its base model, else none; 'none' = the "
                          "plain model (e.g. a published RECOMP checkpoint)."},
    )
    prompt_template: str = field(
        default="",
        metadata={"help": "Summarizer prompt with {question} and {documents}; empty = the adapter's template, else "
                          "RECOMP's 'Question: {question}\\n Document: {documents}\\n Summary: '."},
    )
    max_summary_tokens: int = field(
        default=96,
        metadata={"help": "Longest summary, in summarizer tokens; a summary cut there is flagged `truncated`. The "
                          "adapter's training targets average ~46 tokens; a batch decodes until its longest summary "
                          "ends, so this bounds the time per batch."},
    )
    max_input_tokens: int = field(
        default=1024,
        metadata={"help": "Summarizer window: most prompt tokens in one call. Longer inputs follow `long_input`."},
    )
    max_passage_tokens: int | None = field(
        default=None,
        metadata={"help": "Each passage is cut to this many summarizer tokens first (at a sentence end where one "
                          "fits); 0 = no cut; empty = what the adapter was trained with, else 256."},
    )
    long_input: str = field(
        default="map_reduce",
        metadata={"help": "Passages over `max_input_tokens`: 'map_reduce' (summarize groups that fit, then the "
                          "partial summaries) or 'truncate' (cut every passage to an equal share of the window)."},
    )
    on_empty: str = field(
        default="no_context",
        metadata={"help": "Empty summary (nothing helps): 'no_context' (the generator answers without context) or "
                          "'keep_original' (pass the passages through uncompressed)."},
    )
    empty_threshold: float | None = field(
        default=None,
        metadata={"help": "Summary is empty when P(end marker as the first token) >= this; empty = the adapter's "
                          "calibrated value, or plain greedy decoding (end marker is the top token) without one."},
    )
    input: str = field(
        default="auto",
        metadata={"help": "What the summarizer reads: 'extracted' (the sentences the extractive classifier keeps "
                          "under `extract_tokens`, with their titles: extract-then-fuse), 'passages' (each passage cut "
                          "to `max_passage_tokens`), or 'auto' (what the adapter was trained on)."},
    )
    extract_tokens: int | None = field(
        default=None,
        metadata={"help": "With input: extracted, the token budget of the extractive step (its `max_tokens`); empty = "
                          f"what the adapter was trained with, else {DEFAULT_EXTRACT_TOKENS}."},
    )
    relevance_gate: str = field(
        default="auto",
        metadata={"help": "Decide 'nothing helps' before summarizing, from the extractive classifier's sentence "
                          "scores (`gate_model`): 'set' (the set-level gate fitted beside the classifier, "
                          "set_gate.json: P(the set holds the evidence) from the scores of all sentences), "
                          "'extractive' (the best sentence's score alone), 'none' (the summarizer alone decides), or "
                          "'auto' ('set' when the classifier has a usable set gate and `gate_threshold` is empty, "
                          "else 'extractive'). A gated question gets "
                          "an empty summary without a summarizer call."},
    )
    gate_model: str = field(
        default="default",
        metadata={"help": "The extractive (crossencoder) model the gate and the extractive step score with: "
                          "'default' = the one shipped with ragzip, or a folder from `ragzip train extractive`."},
    )
    gate_threshold: float | None = field(
        default=None,
        metadata={"help": "Gate threshold (0 = never gate): the summary is empty when the gate's probability is "
                          "below it. Empty = the calibrated one: the set gate's own, or "
                          f"{DEFAULT_GATE_THRESHOLD} for the best-sentence rule (both keep the evidence of 95% of "
                          "held-out training questions)."},
    )
    on_echo: str = field(
        default="truncate",
        metadata={"help": "Summarizer that echoes the prompt: 'truncate' (the first max_summary_tokens tokens of "
                          "the passages), 'keep_original' or 'no_context'. Always flagged in extra['echo']."},
    )
    faithfulness_check: bool = field(
        default=False,
        metadata={"help": "Drop summary sentences whose content words are not found in one passage "
                          "(see faithfulness_threshold)."},
    )
    faithfulness_threshold: float = field(
        default=0.6,
        metadata={"help": "A summary sentence is supported when at least this fraction of its content words "
                          "occurs in a single passage."},
    )
    batch_size: int = field(default=8, metadata={"help": "Summaries decoded together (left-padded, sorted by length)."})
    device: str | None = field(
        default=None, metadata={"help": "Torch device; empty means cuda when a GPU is present, else cpu."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"{WHERE}.model must be a model name or path, got {self.model!r}; "
                              f"e.g. {DEFAULT_MODEL!r}.")
        check_choice(WHERE, "backbone", self.backbone, BACKBONES)
        check_choice(WHERE, "long_input", self.long_input, LONG_INPUT)
        check_choice(WHERE, "on_empty", self.on_empty, ON_EMPTY)
        check_choice(WHERE, "on_echo", self.on_echo, ON_ECHO)
        check_choice(WHERE, "relevance_gate", self.relevance_gate, RELEVANCE_GATE)
        check_choice(WHERE, "input", self.input, INPUTS)
        if self.gate_threshold is not None:
            check_range(WHERE, "gate_threshold", self.gate_threshold, 0.0, 1.0)
        if self.extract_tokens is not None:
            check_range(WHERE, "extract_tokens", self.extract_tokens, 8)
        if not isinstance(self.gate_model, str) or not self.gate_model.strip():
            raise ConfigError(f"{WHERE}.gate_model must be 'default' or an extractive model folder, "
                              f"got {self.gate_model!r}.")
        if not isinstance(self.adapter, str) or not self.adapter.strip():
            raise ConfigError(f"{WHERE}.adapter must be 'auto', 'none' or a folder, got {self.adapter!r}.")
        if self.prompt_template:
            check_template(self.prompt_template, f"{WHERE}.prompt_template")
        check_range(WHERE, "max_summary_tokens", self.max_summary_tokens, 1)
        check_range(WHERE, "max_input_tokens", self.max_input_tokens, 64)
        if self.max_passage_tokens is not None:
            check_range(WHERE, "max_passage_tokens", self.max_passage_tokens, 0)
        if self.empty_threshold is not None:
            check_range(WHERE, "empty_threshold", self.empty_threshold, 0.0, 1.0)
        check_range(WHERE, "faithfulness_threshold", self.faithfulness_threshold, 0.0, 1.0)
        check_range(WHERE, "batch_size", self.batch_size, 1)
        if self.device == "":
            self.device = None


def check_template(template: str, where: str) -> None:
    """A summarizer prompt must contain ``{question}`` and ``{documents}`` and no other slot."""
    try:
        slots = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ConfigError(f"{where} = {template!r} is not a valid format string ({err}). "
                          "Write literal braces as '{{' and '}}'.") from None
    missing = [s for s in ("question", "documents") if s not in slots]
    if missing:
        raise ConfigError(f"{where} must contain {', '.join('{' + s + '}' for s in missing)}, got {template!r}; "
                          f"e.g. {RECOMP_TEMPLATE!r}.")
    extra = sorted(slots - {"question", "documents"})
    if extra:
        raise ConfigError(f"{where} has unknown slot(s) {', '.join('{' + s + '}' for s in extra)}; "
                          "allowed: {question}, {documents}.")
