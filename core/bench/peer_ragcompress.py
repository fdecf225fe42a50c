"""The ``ragcompress`` peer: ragcompress's extractive, provenance-keeping sentence selector behind a ragzip adapter.

`ragcompress <https://pypi.org/project/ragcompress/>`_ (0.1.0, Apache-2.0) splits every chunk into verbatim
sentences, scores each ``(query, sentence)`` pair, penalises near-duplicates of higher-ranked sentences (greedy MMR),
keeps sentences under a budget, drops near-duplicate survivors and reassembles them in reading order, one paragraph
per source document. This adapter runs its real :class:`ragcompress.Compressor` pipeline (its splitter, MMR pass,
budget controllers, dedup and reassembly) in-process; only the scorer is chosen for offline use.

Choices, and why:

- **Scorer (``scorer:``).** ragcompress's default scorer is a cross-encoder, ``cross-encoder/ms-marco-MiniLM-L-6-v2``
  plus ``sentence-transformers/all-MiniLM-L6-v2`` for redundancy, both fetched from the model hub on first use.
  Neither is shipped with ragzip, so offline ``CrossEncoder(...)`` raises ``OSError: We couldn't connect to ...
  and couldn't find them in the cached files``. The three choices:

  ``embedding`` (default)
      ragcompress's ``CrossEncoderScorer`` with only its relevance pass swapped: relevance is the cosine between the
      query and the sentence under ragzip's embedder (``embedded:minilm``, the retriever's own MiniLM, shared with the
      bench). Its MMR redundancy pass (``redundancy_lambda``) and the cosine dedup at reassembly run unchanged on the
      same vectors. This is a bi-encoder standing in for ragcompress's cross-encoder, not ragcompress's own default.
      It is the default here because it is the fastest offline choice and the one that keeps answers best. On 20
      HotpotQA dev questions (10 paragraphs, about 1,600 tokens each; 2 CPU cores shared with a training job, one
      torch thread) it took 1.4-2.6 s per question. The gold answer survived in 30/45/60% of questions at budget
      128/256/512. The attention scorer took 9-11 s per question on the same machine and kept 25/30/50%.
  ``attention``
      ragcompress's own ``AttentionScorer`` (AttnComp-style: the query is appended after all sentences, and each
      sentence is scored by the last-layer, head-averaged attention its tokens receive from the query tokens) over the
      local SmolLM2 (``model:``, default ``embedded:smollm2-135m``, shared with the generator through
      :func:`ragzip.models.load_causal_lm`). ragcompress loads models with eager attention and so returns the
      attention maps of *every* layer: 10-34 s and 6 GB RSS per question here. It reads only the last layer's, so
      during the call (:func:`eager_last_attention`) we switch only the last attention layer to eager, and the base
      model's config too, so that it builds the explicit causal mask an eager layer needs. The other layers stay SDPA.
      On 4 HotpotQA paragraphs (27 sentences) this took 5.2 s against 10.7 s all-eager, with scores within 4e-8 and
      the same ranking. Peak RSS was about 1.4 GB. SmolLM2's tokenizer adds no BOS token, so the first sentence takes
      the attention sink and scores 1.0 whatever it says. That is how ragcompress behaves with this model; we keep it.
  ``cross_encoder``
      ragcompress's default ``CrossEncoderScorer`` unchanged, for a reranker you have locally (``cross_encoder:``
      takes a folder or a cached HF id; the default id needs the hub). Its redundancy embedder is ragzip's embedder,
      not a second hub download.

- **Budget.** ``budget`` is ragcompress's ``max_tokens`` (its default is 512). It is counted with the *generator's*
  tokenizer: we pass :attr:`token_counter` as ragcompress's ``token_counter``, so tiktoken is never used (and never
  downloads cl100k). ``budget_mode: fixed`` is ``FixedBudget(top_k, max_tokens, min_score)``. It skips a
  sentence that would overflow the budget and keeps packing cheaper ones. ``budget_mode: adaptive`` is
  ``AdaptiveBudget(drop_threshold, min_tokens, max_tokens=budget)``, its elbow detector. The budget applies to the
  selected sentences, each counted on its own; a passage's text (its kept sentences joined by spaces) is counted
  again as a whole for ``tokens_after``. On HotpotQA that sum never went over the budget.
- **Provenance.** Each passage becomes one ragcompress ``Chunk`` (``doc_id`` = passage id, unique after the base
  class drops duplicates; ``chunk_id`` = its position). ragcompress then writes one paragraph per passage, in input
  order, so each passage's text is exactly its paragraph. ``CompressedContext.text`` equals ragcompress's
  ``result.text``. ``units`` lists every sentence of the passage as ragcompress split it, with its score (after the
  MMR penalty) and whether it was kept. ``kept`` means every sentence survived; passages with no survivor are
  ``dropped``.

Missing packages are reported, not hidden: :func:`missing_dependency` gives the reason and the pip extra.

Example:
    >>> from ragzip.tokens import WhitespaceTokenCounter
    >>> peer = RagCompressCompressor(RagCompressConfig(budget=12, embedder="hash:64"),
    ...                              token_counter=WhitespaceTokenCounter())  # doctest: +SKIP
    >>> peer.compress("capital of France?", ["Paris is the capital of France. It is big."]).text  # doctest: +SKIP
    'Paris is the capital of France. It is big.'
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ragzip._lazy import require
from ragzip.compressor import Compressor, CompressorConfig
from ragzip.config_utils import check_range
from ragzip.embed import Embedder
from ragzip.errors import ConfigError, MissingDependencyError
from ragzip.models import hub_error, load_causal_lm, resolve
from ragzip.types import CompressedContext, Passage, PassageResult, Unit

logger = logging.getLogger(__name__)

NAME = "ragcompress"
MODULES = ("ragcompress", "sentence_transformers")
EXTRA = "peers"
SCORERS = ("embedding", "attention", "cross_encoder")
BUDGET_MODES = ("fixed", "adaptive")
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"  # ragcompress's default (needs the hub)


def missing_dependency() -> str | None:
    """Why the ragcompress peer cannot run here (missing packages and the install command), or ``None``."""
    missing = []
    for module in MODULES:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):
            missing.append(module)
    if not missing:
        return None
    return f"not installed: {', '.join(missing)}; install with `pip install 'ragzip[{EXTRA}]'`"


# ------------------------------------------------------------------------------------------------------------ config
@dataclass
class RagCompressConfig(CompressorConfig):
    """ragcompress ``Compressor``: keep the sentences that score best for the query under a token budget."""

    scorer: str = field(default="embedding", metadata={
        "help": "embedding (ragzip's embedder, offline), attention (local causal LM), or cross_encoder (local reranker)."})
    budget: int | None = field(default=512, metadata={
        "help": "ragcompress max_tokens: most generator tokens of kept sentences per question (None: no cap)."})
    budget_mode: str = field(default="fixed", metadata={
        "help": "fixed (FixedBudget: top_k / budget / min_score) or adaptive (AdaptiveBudget: elbow detection)."})
    top_k: int | None = field(default=None, metadata={"help": "fixed: keep at most this many sentences."})
    min_score: float | None = field(default=None, metadata={"help": "fixed: stop at sentences scoring below this."})
    drop_threshold: float = field(default=0.25, metadata={"help": "adaptive: normalised score gap that is the elbow."})
    min_tokens: int = field(default=64, metadata={"help": "adaptive: keep at least this many tokens (supply permitting)."})
    redundancy_lambda: float = field(default=0.5, metadata={
        "help": "MMR weight: score = relevance - lambda * max similarity to a higher-ranked sentence (0: off)."})
    dedup_threshold: float = field(default=0.9, metadata={
        "help": "Kept sentences more similar than this are collapsed into the better-scored one."})
    embedder: str = field(default="embedded:minilm", metadata={
        "help": "Embedder spec (ragzip's Embedder): relevance for `embedding`, redundancy and dedup for all but attention."})
    model: str = field(default="embedded:smollm2-135m", metadata={
        "help": "attention: the local causal LM whose last-layer attention scores sentences."})
    cross_encoder: str = field(default=DEFAULT_CROSS_ENCODER, metadata={
        "help": "cross_encoder: a local reranker folder, or a HF id already in the local cache."})
    max_length: int = field(default=4096, metadata={"help": "attention: truncation length of the concatenated input."})
    device: str = field(default="cpu", metadata={"help": "Torch device of the scoring model."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scorer not in SCORERS:
            raise ConfigError(f"ragcompress scorer = {self.scorer!r} must be one of {', '.join(map(repr, SCORERS))}; "
                              "`embedding` runs offline with ragzip's embedder.")
        if self.budget_mode not in BUDGET_MODES:
            raise ConfigError(f"ragcompress budget_mode = {self.budget_mode!r} must be 'fixed' or 'adaptive'.")
        if self.budget is not None:
            check_range(NAME, "budget", self.budget, 1)
        if self.budget_mode == "fixed" and self.budget is None and self.top_k is None:
            raise ConfigError("ragcompress budget_mode 'fixed' needs `budget` or `top_k`; e.g. budget=256.")
        if self.budget_mode == "adaptive":
            if self.budget is None:
                raise ConfigError("ragcompress budget_mode 'adaptive' needs `budget` (its max_tokens); e.g. budget=512.")
            if not 0.0 < self.drop_threshold <= 1.0:
                raise ConfigError(f"ragcompress drop_threshold = {self.drop_threshold!r} must be in (0, 1], e.g. 0.25.")
            check_range(NAME, "min_tokens", self.min_tokens, 0)
            if self.min_tokens > self.budget:
                raise ConfigError(f"ragcompress min_tokens = {self.min_tokens} must be <= budget = {self.budget}.")
        if self.top_k is not None:
            check_range(NAME, "top_k", self.top_k, 1)
        if not 0.0 <= self.redundancy_lambda <= 1.0:
            raise ConfigError(f"ragcompress redundancy_lambda = {self.redundancy_lambda!r} must be in [0, 1], e.g. 0.5.")
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ConfigError(f"ragcompress dedup_threshold = {self.dedup_threshold!r} must be in (0, 1], e.g. 0.9.")
        check_range(NAME, "max_length", self.max_length, 8)

    def describe_budget(self) -> str:
        """The budget in words, for drop reasons."""
        if self.budget_mode == "adaptive":
            return f"adaptive budget (elbow {self.drop_threshold}, {self.min_tokens}-{self.budget} tokens)"
        parts = [f"{self.budget} tokens" if self.budget else "", f"top_k={self.top_k}" if self.top_k else "",
                 f"min_score={self.min_score}" if self.min_score is not None else ""]
        return "budget of " + ", ".join(p for p in parts if p)


# ----------------------------------------------------------------------------------------------------------- scorers
def embedding_scorer(embedder: Any, redundancy_lambda: float = 0.5) -> Any:
    """A ragcompress ``CrossEncoderScorer`` with bi-encoder relevance: cosine(query, sentence) under ``embedder``.

    The MMR redundancy pass and the reassembly dedup (both through ``embed``) are ragcompress's own code. Vectors are
    memoised per text until :meth:`reset`, so each sentence is embedded once per question.
    """
    scoring = require("ragcompress.scoring", extra=EXTRA)

    class EmbeddingScorer(scoring.CrossEncoderScorer):
        """Relevance = cosine similarity under a ragzip embedder; everything else as in ``CrossEncoderScorer``."""

        def __init__(self) -> None:
            super().__init__(model_name="(unused: bi-encoder relevance)",
                             embedding_model_name=str(getattr(embedder, "name", "ragzip")),
                             redundancy_lambda=redundancy_lambda)
            self.ragzip_embedder = embedder
            self._memo: dict[str, np.ndarray] = {}
            self.last_scored: list[Any] = []

        def reset(self) -> None:
            self._memo.clear()
            self.last_scored = []

        def embed(self, texts: list[str]) -> np.ndarray:
            new = [t for t in dict.fromkeys(texts) if t not in self._memo]
            if new:
                self._memo.update(zip(new, self.ragzip_embedder.encode(new)))
            if not texts:
                return np.zeros((0, int(getattr(self.ragzip_embedder, "dim", 0))), dtype=np.float32)
            return np.stack([self._memo[t] for t in texts])  # (n, dim), unit rows

        def _relevance_scores(self, query: str, texts: list[str]) -> np.ndarray:
            query_vector = np.asarray(self.ragzip_embedder.encode_query(query), dtype=np.float32).reshape(-1)
            return self.embed(texts) @ query_vector  # (n,) cosine in [-1, 1]

        def score(self, query: str, sentences: list[Any], context: list[Any]) -> list[Any]:
            self.last_scored = super().score(query, sentences, context)
            return self.last_scored

    return EmbeddingScorer()


def cross_encoder_scorer(model: str, embedder: Any, redundancy_lambda: float = 0.5, device: str = "cpu") -> Any:
    """The default ragcompress ``CrossEncoderScorer`` on a local reranker, with ``embedder`` for redundancy and dedup.

    Raises:
        ModelNotFoundError: the reranker is neither a local folder nor in the local HF cache.
    """
    scoring = require("ragcompress.scoring", extra=EXTRA)
    path = resolve(model)

    class RecordingCrossEncoderScorer(scoring.CrossEncoderScorer):
        """``CrossEncoderScorer`` that embeds with a ragzip embedder and remembers the last scored pool."""

        last_scored: list[Any] = []

        def reset(self) -> None:
            self.last_scored = []

        def embed(self, texts: list[str]) -> np.ndarray:
            return embedder.encode(list(texts))

        def score(self, query: str, sentences: list[Any], context: list[Any]) -> list[Any]:
            self.last_scored = super().score(query, sentences, context)
            return self.last_scored

    scorer = RecordingCrossEncoderScorer(model_name=path, embedding_model_name=str(getattr(embedder, "name", "")),
                                         redundancy_lambda=redundancy_lambda, device=device)
    try:
        scorer._get_cross_encoder()  # load now: fail at build time, not on the first question
    except OSError as err:
        raise hub_error(model, err) from None
    return scorer


def _no_output_attentions_warning(record: logging.LogRecord) -> bool:
    return "output_attentions" not in record.getMessage()


@contextlib.contextmanager
def eager_last_attention(model: Any) -> Iterator[None]:
    """Run only the last attention layer of ``model`` eagerly (so it returns weights), the others as configured.

    ragcompress's ``AttentionScorer`` reads ``attentions[-1]`` only; all-eager attention for every layer costs 3-5x
    the time and gigabytes of attention maps on a CPU. The base model's own config is switched to eager too, so it
    builds an explicit causal mask: SDPA models otherwise pass no mask and rely on ``is_causal``, which an eager layer
    does not know (it would let tokens see later ones). The other layers keep the original config and run SDPA with
    that explicit mask. Everything is restored on exit (the model may be shared with a generator).
    """
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    layers = getattr(base, "layers", None)
    attention = getattr(layers[-1], "self_attn", None) if layers is not None and len(layers) else None
    config = getattr(attention, "config", None)
    if (config is None or getattr(config, "_attn_implementation", "eager") == "eager"
            or getattr(base, "config", None) is not config):
        yield  # already eager, or not a layout we know: ragcompress's own path (all layers as loaded)
        return
    eager = copy.copy(config)
    eager._attn_implementation = "eager"
    base.config = eager  # the mask builder reads this one
    attention.config = eager
    sdpa_logger = logging.getLogger("transformers.integrations.sdpa_attention")
    sdpa_logger.addFilter(_no_output_attentions_warning)  # the SDPA layers warn that they return no weights: intended
    try:
        yield
    finally:
        attention.config = config
        base.config = config
        sdpa_logger.removeFilter(_no_output_attentions_warning)


def attention_scorer(model: Any, tokenizer: Any, max_length: int = 4096) -> Any:
    """A ragcompress ``AttentionScorer`` over an already loaded causal LM (its base model: no LM head is run).

    Args:
        model: A transformers causal LM or base model (SDPA or eager attention).
        tokenizer: Its *fast* tokenizer (ragcompress needs ``return_offsets_mapping``).
        max_length: Truncation length of sentences + question.
    """
    scoring = require("ragcompress.scoring", extra=EXTRA)
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"ragcompress attention scorer needs a fast tokenizer (offset mapping); got "
                          f"{type(tokenizer).__name__}. Load it with `AutoTokenizer.from_pretrained(..., use_fast=True)`.")
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)

    class RecordingAttentionScorer(scoring.AttentionScorer):
        """``AttentionScorer`` with the last-layer-only eager switch, remembering the last scored pool."""

        last_scored: list[Any] = []

        def reset(self) -> None:
            self.last_scored = []

        def score(self, query: str, sentences: list[Any], context: list[Any]) -> list[Any]:
            with eager_last_attention(base), torch.inference_mode():
                self.last_scored = super().score(query, sentences, context)
            return self.last_scored

    return RecordingAttentionScorer(model=base, tokenizer=tokenizer, max_length=max_length)


# ----------------------------------------------------------------------------------------------------------- adapter
class RagCompressCompressor(Compressor):
    """Adapter running ``ragcompress.Compressor`` (0.1.x) on ragzip passages.

    Args:
        config: The options (see :class:`RagCompressConfig`).
        embedder: A ragzip :class:`~ragzip.embed.Embedder` to share (the bench passes the retriever's); loaded from
            ``config.embedder`` when ``None`` and the scorer needs one.
        model: For ``scorer: attention``, an already loaded causal LM (tests inject tiny ones); loaded from
            ``config.model`` when ``None``.
        tokenizer: The fast tokenizer that goes with ``model``.
        **kwargs: ``token_counter`` and ``store``, as for every :class:`~ragzip.compressor.Compressor`.

    Raises:
        MissingDependencyError: ragcompress (or sentence-transformers) is not installed.
        ModelNotFoundError: the scoring model cannot be found locally.
    """

    name = NAME
    config_class = RagCompressConfig

    def __init__(self, config: RagCompressConfig | None = None, *, embedder: Any = None, model: Any = None,
                 tokenizer: Any = None, **kwargs: Any) -> None:
        reason = missing_dependency()
        if reason:
            raise MissingDependencyError(f"peer {NAME!r} cannot run: {reason}.")
        super().__init__(config, **kwargs)
        ragcompress = require("ragcompress", extra=EXTRA)
        cfg = self.config
        self.embedder = None
        if cfg.scorer != "attention":
            if embedder is None:
                embedder = Embedder(cfg.embedder, device=cfg.device)
            self.embedder = embedder
            cfg.embedder = str(getattr(embedder, "name", cfg.embedder))  # record what really ran
        if cfg.scorer == "embedding":
            self.scorer = embedding_scorer(self.embedder, cfg.redundancy_lambda)
        elif cfg.scorer == "cross_encoder":
            self.scorer = cross_encoder_scorer(cfg.cross_encoder, self.embedder, cfg.redundancy_lambda, cfg.device)
        else:
            if model is None:
                model, tokenizer = load_causal_lm(cfg.model, cfg.device)
            elif tokenizer is None:
                raise ConfigError("ragcompress: pass the model's fast `tokenizer=` together with `model=`.")
            self.scorer = attention_scorer(model, tokenizer, cfg.max_length)
        if cfg.budget_mode == "adaptive":
            budget = ragcompress.AdaptiveBudget(drop_threshold=cfg.drop_threshold, min_tokens=cfg.min_tokens,
                                                max_tokens=cfg.budget)
        else:
            budget = ragcompress.FixedBudget(top_k=cfg.top_k, max_tokens=cfg.budget, min_score=cfg.min_score)
        # The counter is read at call time: bind() may swap in the generator's after construction.
        self.rc = ragcompress.Compressor(scorer=self.scorer, budget=budget, dedup_threshold=cfg.dedup_threshold,
                                         include_provenance_markers=False,
                                         token_counter=lambda text: self.token_counter.count(text))
        self.version = str(getattr(ragcompress, "__version__", ""))

    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        chunk = require("ragcompress", extra=EXTRA).Chunk
        chunks = [chunk(doc_id=p.id, chunk_id=str(i), text=p.text) for i, p in enumerate(passages)]
        self.scorer.reset()
        try:
            out = self.rc.compress(query, chunks)
            pool = list(self.scorer.last_scored)
        finally:
            self.scorer.reset()  # drop per-question memo and sentence lists
        kept_keys = {(s.source_chunk_id, s.sentence_index_in_chunk) for s in out.sentences}
        by_passage: dict[int, list[Any]] = {}
        for s in pool:
            by_passage.setdefault(int(s.source_chunk_id), []).append(s)
        texts = {i: " ".join(s.text for s in out.sentences if s.source_chunk_id == str(i)) for i in range(len(passages))}
        counter = self.token_counter
        before = counter.count_many([p.text for p in passages])
        after = counter.count_many([texts[i] for i in range(len(passages))])
        why = f"none of its sentences made ragcompress's {self.config.describe_budget()}"
        results = []
        for i, p in enumerate(passages):
            sentences = sorted(by_passage.get(i, []), key=lambda s: s.sentence_index_in_chunk)
            units = tuple(Unit(s.sentence_index_in_chunk, s.text, float(s.score),
                               (s.source_chunk_id, s.sentence_index_in_chunk) in kept_keys) for s in sentences)
            text = texts[i]
            if not text:
                decision, reason = "dropped", why
            elif units and all(u.kept for u in units):
                decision, reason = "kept", ""
            else:
                decision, reason = "compressed", ""
            results.append(PassageResult(p, text, decision, reason=reason, units=units, tokens_before=before[i],
                                         tokens_after=after[i] if text else 0,
                                         extra={"sentences_kept": sum(u.kept for u in units),
                                                "sentences": len(units)}))
        return self.context(query, results, reason="" if out.text else f"ragcompress kept nothing ({why})",
                            extra={"scorer": self.config.scorer, "ragcompress_version": self.version})


__all__ = ["BUDGET_MODES", "SCORERS", "RagCompressCompressor", "RagCompressConfig", "attention_scorer",
           "cross_encoder_scorer", "eager_last_attention", "embedding_scorer", "missing_dependency"]
