"""The peers ``ragzip bench`` compares against, each behind a ragzip :class:`~ragzip.compressor.Compressor` adapter.

Every peer is the real third-party implementation, run in-process on the same passages, and returns a
:class:`~ragzip.types.CompressedContext` whose tokens are counted with the generator's tokenizer, so its row in the
table is measured exactly like ragzip's own compressors. Inputs are never mutated (the peers get copies).

=========================  =======================================================  ====================================
method                     what runs                                                options (defaults)
=========================  =======================================================  ====================================
``lc_embeddings_filter``   LangChain ``EmbeddingsFilter`` (langchain-classic) over  ``k=2``, ``similarity_threshold``
                           ragzip's embedder as the LangChain adapter's             (none)
                           ``RagzipEmbeddings``
``li_sentence_optimizer``  LlamaIndex ``SentenceEmbeddingOptimizer`` over ragzip's  ``percentile_cutoff=0.5``,
                           embedder as the LlamaIndex adapter's ``RagzipEmbedding`` ``context_before=0``,
                           and NLTK's trained English punkt sentence splitter       ``context_after=0``
``longllmlingua``          ``llmlingua.PromptCompressor`` (LongLLMLingua ranking +  ``rate=0.5`` or ``target_token``
                           token pruning) on the same local SmolLM2 folder          (the bench sets an equal budget)
``ragcompress``            ragcompress's sentence selector (MMR, budget, dedup,     ``budget=512``,
                           reassembly) with an offline relevance scorer (see        ``scorer=embedding``
                           :mod:`ragzip.bench.peer_ragcompress`)
=========================  =======================================================  ====================================

Choices, and why:

- **EmbeddingsFilter, k=2.** It keeps the ``k`` passages most similar to the query (whole passages, nothing inside
  them is cut). HotpotQA needs two paragraphs, and k=2 was the best setting of this filter in the peer check
  (``similarity_threshold`` alone keeps a varying number). With the retriever's own MiniLM, this is in effect
  "the top-2 of the top-K"; kept passages stay in retrieval order.
- **SentenceEmbeddingOptimizer.** The default splitter is an *untrained* ``PunktSentenceTokenizer`` that breaks
  "Dr. Smith ... Jan. 3." into fragments; we pass ``nltk.tokenize.PunktTokenizer("english").tokenize``, whose data
  ships inside llama-index-core (no download). ``context_before/after`` default to 1, which duplicates neighbouring
  sentences and can make text *longer*; we set 0. ``percentile_cutoff=0.5`` keeps the top half of each passage's
  sentences (a one-sentence passage is kept whole: ``int(1 * 0.5) == 0`` means "no cap" to LlamaIndex). Kept
  sentences come out in similarity order, as LlamaIndex returns them. Node metadata is left empty so it is not
  written into the text.
- **LongLLMLingua.** The settings are the LongLLMLingua recipe from the llmlingua README
  (``rank_method="longllmlingua"``, ``condition_in_question="after_condition"``, ``condition_compare=True``,
  ``reorder_context="sort"``, ``dynamic_context_compression_ratio=0.3``, ``context_budget="+100"``), with our question
  and no instruction, and ``concate_question=False`` (the generator adds the question itself). Two fixes make llmlingua
  0.2.2 run offline on transformers 5 (see ``../shared/research/peer-check.md``):

  1. ``PromptCompressor.__init__`` asks ``tiktoken`` for the gpt-3.5-turbo encoding, which must be downloaded. We
     construct it with ``tiktoken.encoding_for_model`` patched out and set ``oai_tokenizer`` to an
     :class:`~ragzip.tokens.HFTokenCounter` over the local SmolLM2 tokenizer. llmlingua only calls ``.encode`` on it
     to count tokens, so ``rate``/``target_token`` are then in the generator's own tokens.
  2. llmlingua passes and slices legacy ``[(k, v), ...]`` KV caches; transformers 5 returns ``DynamicCache``. We wrap
     ``model.forward`` to convert both ways (checked bit-exact in the peer check).

  LongLLMLingua re-orders and merges the passages: the generator reads llmlingua's exact output (as
  ``CompressedContext.summary``). The per-passage results say which passages its context filter kept
  (``compressed``/``summarized``) or dropped, recovered from ``control_context_budget``.

Missing packages are reported, not hidden: :func:`missing_dependency` returns the reason and the pip extra.

Example:
    >>> missing_dependency("no_such_peer")
    Traceback (most recent call last):
    ...
    ragzip.errors.ConfigError: unknown peer 'no_such_peer'; peers: lc_embeddings_filter, li_sentence_optimizer, longllmlingua, ragcompress.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from ragzip._lazy import require
from ragzip.bench.peer_ragcompress import RagCompressCompressor
from ragzip.compressor import Compressor, CompressorConfig, CompressorInfo
from ragzip.config_utils import check_range, from_dict
from ragzip.errors import ConfigError, MissingDependencyError
from ragzip.generation import kv_cache_kwargs
from ragzip.models import resolve
from ragzip.tokens import HFTokenCounter
from ragzip.types import CompressedContext, Passage, PassageResult, Unit

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------- dependencies
@dataclass(frozen=True)
class PeerInfo:
    """What a peer needs: the modules it imports and the ragzip extra that installs them."""

    modules: tuple[str, ...]
    extra: str
    description: str


PEERS: dict[str, PeerInfo] = {
    "lc_embeddings_filter": PeerInfo(("langchain_core", "langchain_classic", "langchain_community"), "langchain",
                                     "LangChain EmbeddingsFilter (k=2) over ragzip's embedder"),
    "li_sentence_optimizer": PeerInfo(("llama_index.core", "nltk"), "llamaindex",
                                      "LlamaIndex SentenceEmbeddingOptimizer (percentile 0.5) over ragzip's embedder"),
    "longllmlingua": PeerInfo(("llmlingua", "tiktoken"), "peers",
                              "LongLLMLingua (llmlingua PromptCompressor) on the local SmolLM2"),
    "ragcompress": PeerInfo(("ragcompress", "sentence_transformers"), "peers",
                            "ragcompress extractive sentence selection (embedding relevance + MMR) under a token "
                            "budget"),
}


# What the bench's method language needs of each peer: the declaration ragzip's own compressors make when they register.
PEER_DECLARATIONS: dict[str, CompressorInfo] = {
    "lc_embeddings_filter": CompressorInfo(trainer=False, demo=None, bench_default=True,
                                           aliases={"t": "similarity_threshold"}),
    "li_sentence_optimizer": CompressorInfo(trainer=False, demo=None, bench_default=True,
                                            aliases={"p": "percentile_cutoff", "t": "threshold_cutoff"}),
    "longllmlingua": CompressorInfo(trainer=False, demo=None, bench_default=True, budget="target_token",
                                    budget_rate="rate", equal_budget=True, aliases={"r": "rate", "n": "target_token"}),
    "ragcompress": CompressorInfo(trainer=False, demo=None, budget="budget",
                                  aliases={"": "budget", "n": "budget", "k": "top_k"}),
}
_NO_EMBEDDER = frozenset({"longllmlingua"})  # peers that read the text with a language model, not an embedder


def needs_embedder(name: str) -> bool:
    """Whether peer ``name`` compares embeddings (it is built with the bench's embedder)."""
    return name not in _NO_EMBEDDER


def _module_missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent package is missing, or the import system refuses it
        return True


def missing_dependency(name: str) -> str | None:
    """Why peer ``name`` cannot run here (missing packages and the install command), or ``None`` when it can.

    Raises:
        ConfigError: for a name that is not a peer.
    """
    if name not in PEERS:
        raise ConfigError(f"unknown peer {name!r}; peers: {', '.join(PEERS)}.")
    info = PEERS[name]
    missing = [m for m in info.modules if _module_missing(m)]
    if not missing:
        return None
    return (f"not installed: {', '.join(missing)}; install with `pip install 'ragzip[{info.extra}]'`")


def _require(name: str) -> None:
    reason = missing_dependency(name)
    if reason:
        raise MissingDependencyError(f"peer {name!r} cannot run: {reason}.")


def _index_results(query: str, passages: list[Passage], kept: dict[int, str], counter: Any, reason: str,
                   units: dict[int, tuple[Unit, ...]] | None = None,
                   extra: dict[int, dict[str, Any]] | None = None) -> list[PassageResult]:
    """One result per passage from ``{index: kept text}``; passages not in ``kept`` are dropped with ``reason``."""
    before = counter.count_many([p.text for p in passages])
    after = counter.count_many([kept.get(i, "") for i in range(len(passages))])
    results = []
    for i, p in enumerate(passages):
        text = kept.get(i, "")
        if not text:
            decision, why = "dropped", reason
        elif text == p.text:
            decision, why = "kept", ""
        else:
            decision, why = "compressed", ""
        results.append(PassageResult(p, text, decision, reason=why, units=(units or {}).get(i, ()),
                                     tokens_before=before[i], tokens_after=after[i] if text else 0,
                                     extra=(extra or {}).get(i, {})))
    return results


# ------------------------------------------------------------------------------------------- LangChain EmbeddingsFilter
@dataclass
class EmbeddingsFilterConfig(CompressorConfig):
    """LangChain ``EmbeddingsFilter``: keep the ``k`` passages closest to the query (and/or above a threshold)."""

    k: int | None = field(default=2, metadata={"help": "Keep this many most similar passages (None: no cap)."})
    similarity_threshold: float | None = field(
        default=None, metadata={"help": "Drop passages whose cosine similarity to the query is at or below this."})
    embedder: str = field(default="embedded:minilm", metadata={"help": "Embedder spec (ragzip's Embedder)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k is None and self.similarity_threshold is None:
            raise ConfigError("lc_embeddings_filter needs `k` or `similarity_threshold`; e.g. k=2.")
        if self.k is not None:
            check_range("lc_embeddings_filter", "k", self.k, 1)


class LCEmbeddingsFilterCompressor(Compressor):
    """Adapter running LangChain's ``EmbeddingsFilter`` (langchain-classic) on ragzip passages."""

    name = "lc_embeddings_filter"
    config_class = EmbeddingsFilterConfig

    def __init__(self, config: EmbeddingsFilterConfig | None = None, *, embedder: Any = None, **kwargs: Any) -> None:
        _require(self.name)
        super().__init__(config, **kwargs)
        embeddings = require("ragzip.integrations.langchain.embedding").RagzipEmbeddings(
            embedder, spec=None if embedder is not None else self.config.embedder)
        self.embedder = embeddings.embedder
        self.config.embedder = str(getattr(self.embedder, "name", self.config.embedder))  # record what really ran
        filters = require("langchain_classic.retrievers.document_compressors", extra="langchain")
        self.filter = filters.EmbeddingsFilter(embeddings=embeddings, k=self.config.k,
                                               similarity_threshold=self.config.similarity_threshold)

    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        documents = require("langchain_core.documents", extra="langchain")
        docs = [documents.Document(page_content=p.text, metadata={"ragzip_index": i}) for i, p in enumerate(passages)]
        out = self.filter.compress_documents(docs, query)
        kept: dict[int, str] = {}
        extra: dict[int, dict[str, Any]] = {}
        for doc in out:
            i = int(doc.metadata["ragzip_index"])
            kept[i] = passages[i].text
            score = getattr(doc, "state", {}).get("query_similarity_score")
            if score is not None:
                extra[i] = {"similarity": round(float(score), 4)}
        why = f"not among the k={self.config.k} passages most similar to the query" if self.config.k else \
            f"similarity to the query <= {self.config.similarity_threshold}"
        return self.context(query, _index_results(query, passages, kept, self.token_counter, why, extra=extra))


# ------------------------------------------------------------------------------ LlamaIndex SentenceEmbeddingOptimizer
@dataclass
class SentenceOptimizerConfig(CompressorConfig):
    """LlamaIndex ``SentenceEmbeddingOptimizer``: keep each passage's sentences most similar to the query."""

    percentile_cutoff: float | None = field(
        default=0.5, metadata={"help": "Keep this fraction of each passage's sentences (top by similarity)."})
    threshold_cutoff: float | None = field(
        default=None, metadata={"help": "Keep only sentences whose similarity to the query is above this."})
    context_before: int = field(default=0, metadata={"help": "Sentences kept before each selected sentence."})
    context_after: int = field(default=0, metadata={"help": "Sentences kept after each selected sentence."})
    embedder: str = field(default="embedded:minilm", metadata={"help": "Embedder spec (ragzip's Embedder)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.percentile_cutoff is not None and not 0.0 < self.percentile_cutoff <= 1.0:
            raise ConfigError(f"li_sentence_optimizer percentile_cutoff = {self.percentile_cutoff!r} must be in "
                              "(0, 1], e.g. 0.5.")
        check_range("li_sentence_optimizer", "context_before", self.context_before, 0)
        check_range("li_sentence_optimizer", "context_after", self.context_after, 0)


def _llama_index_nltk_dir() -> Path:
    spec = importlib.util.find_spec("llama_index.core")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "_static" / "nltk_cache"


def english_sentence_splitter() -> Callable[[str], list[str]]:
    """NLTK's trained English punkt splitter, from the data bundled in llama-index-core (never downloads)."""
    nltk = require("nltk", extra="llamaindex", feature="the li_sentence_optimizer peer's sentence splitter")
    bundled = str(_llama_index_nltk_dir())
    if bundled not in nltk.data.path:
        nltk.data.path.append(bundled)
    return nltk.tokenize.PunktTokenizer("english").tokenize


class LISentenceOptimizerCompressor(Compressor):
    """Adapter running LlamaIndex's ``SentenceEmbeddingOptimizer`` on copies of ragzip passages."""

    name = "li_sentence_optimizer"
    config_class = SentenceOptimizerConfig

    def __init__(self, config: SentenceOptimizerConfig | None = None, *, embedder: Any = None, **kwargs: Any) -> None:
        _require(self.name)
        super().__init__(config, **kwargs)
        embed_model = require("ragzip.integrations.llamaindex.embedding").RagzipEmbedding(
            embedder, spec=None if embedder is not None else self.config.embedder)
        self.embedder = embed_model.embedder
        self.config.embedder = str(getattr(self.embedder, "name", self.config.embedder))  # record what really ran
        self.split = english_sentence_splitter()
        postprocessor = require("llama_index.core.postprocessor", extra="llamaindex")
        self.optimizer = postprocessor.SentenceEmbeddingOptimizer(
            embed_model=embed_model, percentile_cutoff=self.config.percentile_cutoff,
            threshold_cutoff=self.config.threshold_cutoff, tokenizer_fn=self.split,
            context_before=self.config.context_before, context_after=self.config.context_after)

    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        schema = require("llama_index.core.schema", extra="llamaindex")
        # Fresh nodes: the optimizer rewrites node text in place.
        nodes = [schema.NodeWithScore(node=schema.TextNode(text=p.text, id_=p.id), score=p.score) for p in passages]
        try:
            out = self.optimizer.postprocess_nodes(nodes, query_str=query)
        except ValueError as err:  # "Optimizer returned zero sentences." (only with threshold_cutoff)
            logger.debug("SentenceEmbeddingOptimizer: %s", err)
            out = []
        kept: dict[int, str] = {}
        units: dict[int, tuple[Unit, ...]] = {}
        by_id = {n.node.node_id: n.node.get_content() for n in out}
        for i, p in enumerate(passages):
            text = by_id.get(p.id, "")
            kept[i] = text
            if text:
                units[i] = tuple(Unit(j, s, None, s in text) for j, s in enumerate(self.split(p.text)))
        return self.context(query, _index_results(query, passages, kept, self.token_counter,
                                                  "no sentence passed the optimizer's cutoff", units=units))


# ------------------------------------------------------------------------------------------------------ LongLLMLingua
@dataclass
class LongLLMLinguaConfig(CompressorConfig):
    """LongLLMLingua through ``llmlingua.PromptCompressor`` (the README's LongLLMLingua recipe)."""

    model: str = field(default="embedded:smollm2-135m",
                       metadata={"help": "The small LM that scores tokens (an embedded name, HF id or folder)."})
    rate: float = field(default=0.5, metadata={"help": "Target fraction of tokens kept (used when target_token <= 0)."})
    target_token: int = field(default=-1, metadata={"help": "Target tokens kept per question; overrides rate when > 0."})
    dynamic_context_compression_ratio: float = field(
        default=0.3, metadata={"help": "How much harder lower-ranked passages are compressed."})
    context_budget: str = field(default="+100", metadata={"help": "Extra tokens allowed at the passage-filter stage."})
    condition_in_question: str = field(default="after_condition", metadata={"help": "Question-conditioning mode."})
    reorder_context: str = field(default="sort", metadata={"help": "original, sort or two_stage."})
    iterative_size: int = field(default=200, metadata={"help": "Tokens per token-pruning window."})
    device: str = field(default="cpu", metadata={"help": "Torch device of the small LM."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.rate <= 1.0:
            raise ConfigError(f"longllmlingua rate = {self.rate!r} must be in (0, 1], e.g. 0.5.")
        if self.reorder_context not in ("original", "sort", "two_stage"):
            raise ConfigError(f"longllmlingua reorder_context = {self.reorder_context!r} must be one of "
                              "'original', 'sort', 'two_stage'.")
        check_range("longllmlingua", "iterative_size", self.iterative_size, 1)


def _legacy_cache_forward(model: Any) -> None:
    """Let llmlingua's legacy ``[(k, v), ...]`` KV caches pass through a transformers-5 model (fix 2 above)."""
    cache_utils = require("transformers.cache_utils")  # lazy: slow to import, and the CLI imports this module
    inner = model.forward

    def forward(*args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        if past_key_values is not None and not isinstance(past_key_values, cache_utils.Cache):
            past_key_values = cache_utils.DynamicCache(ddp_cache_data=[(k, v) for k, v in past_key_values])
        out = inner(*args, **kv_cache_kwargs(inner, past_key_values), **kwargs)
        if isinstance(getattr(out, "past_key_values", None), cache_utils.Cache):
            out.past_key_values = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return out

    model.forward = forward


def load_prompt_compressor(model: str = "embedded:smollm2-135m", device: str = "cpu") -> Any:
    """An offline ``llmlingua.PromptCompressor`` on a local causal LM, with both fixes applied (see module docs)."""
    PromptCompressor = require("llmlingua", extra="peers").PromptCompressor
    path = resolve(model)
    with mock.patch("tiktoken.encoding_for_model", lambda name: None):  # fix 1: no tiktoken download
        compressor = PromptCompressor(model_name=path, device_map=device)
    compressor.oai_tokenizer = HFTokenCounter(compressor.tokenizer)  # llmlingua only calls .encode() on it
    compressor.model.eval()
    compressor.model.requires_grad_(False)
    _legacy_cache_forward(compressor.model)  # fix 2: transformers-5 KV caches
    return compressor


def prompt_compressor_from(model: Any, tokenizer: Any) -> Any:
    """A ``PromptCompressor`` around an already loaded causal LM (tests use tiny ones), with both fixes applied.

    It is set up as its ``__init__`` and ``load_model`` would (left padding, pad id, context window).
    """
    PromptCompressor = require("llmlingua", extra="peers").PromptCompressor
    pc = PromptCompressor.__new__(PromptCompressor)
    pc.model_name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)
    pc.use_llmlingua2 = False
    pc.retrieval_model = None
    pc.retrieval_model_name = None
    pc.open_api_config = {}
    pc.cache_bos_num = 10
    pc.prefix_bos_num = 100
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = tokenizer.eos_token_id
    pc.tokenizer = tokenizer
    pc.model = model.eval()
    pc.device = str(next(model.parameters()).device)
    pc.context_idxs = []
    pc.max_position_embeddings = int(model.config.max_position_embeddings)
    pc.oai_tokenizer = HFTokenCounter(tokenizer)
    _legacy_cache_forward(pc.model)
    return pc


class LongLLMLinguaCompressor(Compressor):
    """Adapter running LongLLMLingua (``llmlingua`` 0.2.2) on ragzip passages with the local SmolLM2."""

    name = "longllmlingua"
    config_class = LongLLMLinguaConfig

    def __init__(self, config: LongLLMLinguaConfig | None = None, *, prompt_compressor: Any = None,
                 **kwargs: Any) -> None:
        _require(self.name)
        super().__init__(config, **kwargs)
        self.pc = prompt_compressor or load_prompt_compressor(self.config.model, self.config.device)
        self._used: list[int] | None = None
        original = self.pc.control_context_budget

        def recording(*args: Any, **kw: Any) -> Any:  # remember which passages the context filter kept
            res = original(*args, **kw)
            self._used = list(res[2])
            return res

        self.pc.control_context_budget = recording

    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        cfg = self.config
        self._used = None
        with torch.inference_mode():
            out = self.pc.compress_prompt(
                [p.text for p in passages], instruction="", question=query, rate=cfg.rate,
                target_token=cfg.target_token if cfg.target_token > 0 else -1, iterative_size=cfg.iterative_size,
                rank_method="longllmlingua", condition_in_question=cfg.condition_in_question, condition_compare=True,
                reorder_context=cfg.reorder_context, dynamic_context_compression_ratio=cfg.dynamic_context_compression_ratio,
                context_budget=cfg.context_budget, concate_question=False)
        self.pc.context_idxs = []  # llmlingua appends to this on every call
        text = out["compressed_prompt"].strip()
        used = self._used if self._used is not None else list(range(len(passages)))
        pieces = [t.strip() for t in text.split("\n\n")] if text else []
        counter = self.token_counter
        before = counter.count_many([p.text for p in passages])
        attributed = len(pieces) == len(used)
        after = counter.count_many(pieces) if attributed else []
        results = []
        for i, p in enumerate(passages):
            if i not in used:
                results.append(PassageResult(p, "", "dropped", reason="ranked out by LongLLMLingua's context filter",
                                             tokens_before=before[i]))
                continue
            rank = used.index(i)
            if attributed:
                piece = pieces[rank]
                decision = "kept" if piece == p.text.strip() else "compressed"
                results.append(PassageResult(p, piece, decision, tokens_before=before[i], tokens_after=after[rank],
                                             extra={"position": rank}))
            else:
                results.append(PassageResult(p, "", "summarized", reason="merged into LongLLMLingua's output",
                                             tokens_before=before[i], extra={"position": rank}))
        return self.context(query, results, summary=text, summary_tokens=counter.count(text),
                            reason="" if text else "LongLLMLingua kept nothing",
                            extra={"llmlingua_rate": out.get("rate", "")})


# ----------------------------------------------------------------------------------------------------------- factory
PEER_CLASSES: dict[str, type[Compressor]] = {
    "lc_embeddings_filter": LCEmbeddingsFilterCompressor,
    "li_sentence_optimizer": LISentenceOptimizerCompressor,
    "longllmlingua": LongLLMLinguaCompressor,
    "ragcompress": RagCompressCompressor,
}


def build_peer(name: str, options: dict[str, Any] | None = None, *, embedder: Any = None,
               token_counter: Any = None, **kwargs: Any) -> Compressor:
    """Build peer ``name`` with config ``options`` (strict keys), sharing ``embedder`` and ``token_counter``.

    Raises:
        ConfigError: unknown peer or option.
        MissingDependencyError: its package is not installed (the message gives the pip extra).
    """
    if name not in PEER_CLASSES:
        raise ConfigError(f"unknown peer {name!r}; peers: {', '.join(PEERS)}.")
    _require(name)
    klass = PEER_CLASSES[name]
    config = from_dict(klass.config_class, dict(options or {}), where=f"peer[{name}]")
    if not needs_embedder(name):
        return klass(config, token_counter=token_counter, **kwargs)
    return klass(config, embedder=embedder, token_counter=token_counter, **kwargs)


__all__ = ["PEERS", "PEER_DECLARATIONS", "EmbeddingsFilterConfig", "LCEmbeddingsFilterCompressor",
           "LISentenceOptimizerCompressor", "LongLLMLinguaCompressor", "LongLLMLinguaConfig", "PeerInfo",
           "SentenceOptimizerConfig", "build_peer", "english_sentence_splitter", "load_prompt_compressor",
           "missing_dependency", "needs_embedder"]
