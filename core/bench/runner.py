"""The ``ragzip bench`` run: questions, retrieval, then every method on the same passages with the same generator.

:func:`run_bench` is the whole run; it returns the result dict (the DESIGN §6 contract) and writes the files of
:mod:`ragzip.bench.report`. Settings of one compressor model share what they can: a compressor that re-selects
without re-scoring (``selection_fields`` and ``with_selection``) is built once per model and every other setting of
that model re-selects from its scores; the settings of one peer sweep share one embedding memo.
"""

from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ragzip.bench.measure import RSSSampler, load_average, machine_info, mean
from ragzip.bench.methods import NO_CONTEXT, MethodSpec, declaration, default_methods, method_label, parse_methods
from ragzip.bench.peers import build_peer, missing_dependency, needs_embedder
from ragzip.bench.report import jsonable, write_outputs
from ragzip.compressor import build_compressor, config_dict
from ragzip.config import validate_compressor_block
from ragzip.config_utils import from_dict, to_dict, unknown_key_message
from ragzip.data import corpus, load_qa, recall, same_article_distractors, select
from ragzip.embed import Embedder
from ragzip.errors import ConfigError, InputError, MissingDependencyError, ModelNotFoundError, RagzipError
from ragzip.evidence import EVIDENCE_KEYS, add_intervals, curves, evidence, mean_defined
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.metrics import score
from ragzip.relevance import SentenceSelector
from ragzip.retrieval import FaissRetriever, is_saved_index
from ragzip.types import CompressedContext, PassageResult

logger = logging.getLogger(__name__)

CONTRACT_KEYS = ("acc", "em", "f1", "context_tokens", "compression_ratio", "compress_s", "ttft_s", "total_s",
                 "peak_rss_mb", "n")


def load_bench_config(path: str | Path | None) -> dict[str, Any]:
    """Read a bench YAML: ``methods``, ``generator`` and ``embedder``, or a pipeline YAML.

    ``methods`` maps a label to a compressor config or chain, ``generator`` holds GeneratorConfig fields and
    ``embedder`` a spec. A pipeline YAML's ``compressor:`` becomes method ``config`` and its ``retriever.embedder`` /
    ``retriever.top_k`` are used as defaults.

    Raises:
        ConfigError: missing file, invalid YAML or an unknown top-level key (named, with the close match).
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"bench config {str(path)!r} not found; pass a YAML with `methods:`, `generator:` and/or "
                          "`embedder:` (see benchmarks/README.md).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"bench config {str(path)!r} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"bench config {str(path)!r} must be a mapping, got {type(data).__name__}.")
    allowed = ["methods", "generator", "embedder", "retriever", "compressor"]
    for key in data:
        if key not in allowed:
            raise ConfigError(unknown_key_message(str(key), allowed, f"bench config {path.name}"))
    out: dict[str, Any] = {"methods": {}}
    methods = data.get("methods") or {}
    if not isinstance(methods, Mapping):
        raise ConfigError(f"{path.name}: `methods` must map a label to a compressor config, e.g. "
                          "`methods: {strict: {type: extractive, threshold: 0.7}}`.")
    if "compressor" in data:
        methods = {"config": data["compressor"], **methods}
    for label, block in methods.items():
        try:
            validate_compressor_block(block)
        except ConfigError as err:
            raise ConfigError(f"{path.name}: method {label!r}: {err}") from None
        out["methods"][str(label)] = block
    retriever = data.get("retriever") or {}
    if "embedder" in data or "embedder" in retriever:
        out["embedder"] = data.get("embedder", retriever.get("embedder"))
    if "top_k" in retriever:
        out["top_k"] = retriever["top_k"]
    if "generator" in data:
        out["generator"] = dict(data["generator"] or {})
    return out



@dataclass
class _Run:
    """Everything one method produced."""

    summary: dict[str, Any]
    records: list[dict[str, Any]]


def _compressor_for(spec: MethodSpec, options: dict[str, Any], *, embedder: Any, generator: Any,
                    shared: dict[str, tuple[Any, str]] | None = None) -> tuple[Any, str | None]:
    """Build (and bind to the generator) the compressor of ``spec``; also name the row whose scores it re-selects.

    The row is ``None`` when the compressor scores for itself.

    ``shared`` holds, per compressor model of the run, the first compressor built for it and that row's label. A
    compressor that re-selects without re-scoring (it has ``selection_fields`` and ``with_selection``) is built once
    per model: every other setting of the model is a copy of it with its own selection, sharing one memory of scores.
    """
    if spec.kind == "peer":
        compressor = build_peer(spec.name, options, embedder=embedder, token_counter=generator.token_counter)
    else:
        config = spec.config
        if isinstance(config, Mapping):
            config = {**config, **options}
        compressor = build_compressor(config)
        selection = getattr(compressor, "selection_fields", None)
        if selection and isinstance(compressor, SentenceSelector) and shared is not None:
            choice = {name: getattr(compressor.config, name) for name in selection}
            key = _model_key(compressor, selection)
            if key in shared:
                base, label = shared[key]
                return base.with_selection(**choice), label
            compressor.bind(generator)
            compressor.memoize_scores()  # every setting of this model re-selects from one scoring pass
            shared[key] = (compressor, spec.label)
            return compressor.with_selection(**choice), None
    compressor.bind(generator)
    return compressor, None


def _model_key(compressor: Any, selection: frozenset[str]) -> str:
    """What identifies a compressor's scores: its config less the options that only select."""
    return json.dumps({k: v for k, v in config_dict(compressor).items() if k not in selection}, sort_keys=True,
                      default=str)


def _no_context(question: str, passages: Sequence[Any], counter: Any) -> Any:
    counts = counter.count_many([p.text for p in passages])
    return CompressedContext(question, tuple(
        PassageResult(p, "", "dropped", reason="no_context: the question alone", tokens_before=n)
        for p, n in zip(passages, counts, strict=False)), NO_CONTEXT)


def _records(spec: MethodSpec, examples: Sequence[Any], contexts: Sequence[Any], generations: Sequence[Any] | None,
             recalls: Sequence[float | None]) -> list[dict[str, Any]]:
    """One record per question: what the generator read, the evidence metrics and the reader's answer and scores.

    ``context_text`` holds the text as the generator read it, placeholders as they are; the answer and its scores are
    there when the reader ran.
    """
    out = []
    gens: Sequence[Any] = generations if generations is not None else [None] * len(examples)
    for ex, ctx, gen, rec in zip(examples, contexts, gens, recalls, strict=True):
        text = ctx.text
        record: dict[str, Any] = {
            "id": ex.id, "method": spec.label, "question": ex.question, "golds": list(ex.answers),
            **evidence(text, ex.answers, getattr(ex, "supporting", ())),
            "tokens_before": ctx.tokens_before, "tokens_after": ctx.tokens_after,
            "compress_s": round(ctx.compress_s, 5),
        }
        if gen is not None:
            record.update({
                "prediction": gen.text, "raw_prediction": gen.raw_text, **score(gen.text, ex.answers),
                "gen_ttft_s": round(gen.ttft_s, 5), "gen_s": round(gen.total_s, 5),
                "ttft_s": round(ctx.compress_s + gen.ttft_s, 5), "total_s": round(ctx.compress_s + gen.total_s, 5),
                "prompt_positions": gen.prompt_positions, "new_tokens": gen.new_tokens,
                "finish_reason": getattr(gen, "finish_reason", ""),
            })
        record.update({
            "recall": rec, "gold_passages": list(ex.gold_ids), "context_text": text,
            "passages": [_slim(r.provenance(), r.passage.metadata.get("title")) for r in ctx.results],
            **({"reason": ctx.reason} if ctx.reason else {}),
        })
        out.append(record)
    return out


def _slim(provenance: dict[str, Any], title: Any) -> dict[str, Any]:
    """A passage's provenance for the per-question JSONL, its units without their text.

    ``start``/``end`` locate a unit and ``context_text`` holds what the generator read, so a thousand-question sweep
    stays a manageable file.
    """
    units = [{k: v for k, v in u.items() if k != "text"} if isinstance(u, dict) else u
             for u in provenance.get("units") or []]
    return {**provenance, "units": units, "title": title} if units else {**provenance, "title": title}


def _summarise(records: Sequence[dict[str, Any]], rss: RSSSampler, extra: dict[str, Any]) -> dict[str, Any]:
    before = sum(r["tokens_before"] for r in records)
    after = sum(r["tokens_after"] for r in records)
    evidence: dict[str, Any] = {}
    for key in EVIDENCE_KEYS:
        evidence[key] = mean_defined([r[key] for r in records])
        evidence[f"{key}_n"] = sum(r[key] is not None for r in records)
    if records and "acc" not in records[0]:  # --no-generate: evidence and compression cost only
        return {
            **evidence, "context_tokens": mean([r["tokens_after"] for r in records]),
            "compression_ratio": (before / after) if after else (None if before else 1.0),
            "compress_s": mean([r["compress_s"] for r in records]), "peak_rss_mb": round(rss.peak_mb, 1),
            "n": len(records), "tokens_before": mean([r["tokens_before"] for r in records]),
            "empty_context": mean([float(r["tokens_after"] == 0) for r in records]),
            "rss_delta_mb": round(rss.peak_mb - rss.start_mb, 1), **extra,
        }
    summary: dict[str, Any] = {
        "acc": mean([r["acc"] for r in records]),
        "em": mean([r["em"] for r in records]),
        "f1": mean([r["f1"] for r in records]),
        "context_tokens": mean([r["tokens_after"] for r in records]),
        "compression_ratio": (before / after) if after else (None if before else 1.0),
        "compress_s": mean([r["compress_s"] for r in records]),
        "ttft_s": mean([r["ttft_s"] for r in records if r["ttft_s"] is not None]),
        "total_s": mean([r["total_s"] for r in records if r["total_s"] is not None]),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "n": len(records),
        "tokens_before": mean([r["tokens_before"] for r in records]),
        "gen_ttft_s": mean([r["gen_ttft_s"] for r in records if r["gen_ttft_s"] is not None]),
        "ttft_n": sum(r["ttft_s"] is not None for r in records),
        "gen_s": mean([r["gen_s"] for r in records]),
        "new_tokens": mean([r["new_tokens"] for r in records]),
        "empty_context": mean([float(r["tokens_after"] == 0) for r in records]),
        "rss_delta_mb": round(rss.peak_mb - rss.start_mb, 1),
        **evidence,
    }
    summary.update(extra)
    return summary


def _run_method(spec: MethodSpec, options: dict[str, Any], examples: Sequence[Any], passages: Sequence[list[Any]],
                recalls: Sequence[float | None], *, generator: Any, embedder: Any, batch_size: int, warmup: bool,
                progress: bool, seed: int, ttft_questions: int = 0, generate: bool = True,
                shared: dict[str, tuple[Any, str]] | None = None) -> _Run:
    """Compress (and, with ``generate``, answer) every question with one method.

    ``shared``: the compressors built so far in this run, per model (see :func:`_compressor_for`); a setting that
    re-selects from an earlier row's scores skips the warm-up and reports that row as ``scores_from``.
    """
    torch.manual_seed(seed)
    questions = [ex.question for ex in examples]
    scores_from = None
    with RSSSampler() as rss:
        compressor = None
        if spec.kind != NO_CONTEXT:
            compressor, scores_from = _compressor_for(spec, options, embedder=embedder, generator=generator,
                                                      shared=shared)
            if warmup and questions and scores_from is None:
                compressor.compress(questions[0], passages[0])
        contexts: list[Any] = []
        generations: list[Any] = []
        bar = tqdm(total=len(questions), desc=spec.label, file=sys.stderr, disable=not progress, leave=True,
                   dynamic_ncols=True)
        ttft: dict[int, float] = {}
        loop_start = time.perf_counter()
        try:
            step = max(batch_size, 1)
            for lo in range(0, len(questions), step):
                chunk = list(range(lo, min(lo + step, len(questions))))
                # A batch of questions is compressed together (a model-based compressor scores them in one batch).
                if compressor is None:
                    contexts.extend(_no_context(questions[i], passages[i], generator.token_counter) for i in chunk)
                elif len(chunk) == 1:
                    contexts.append(compressor.compress(questions[chunk[0]], passages[chunk[0]]))
                else:
                    contexts.extend(compressor.compress_batch([questions[i] for i in chunk],
                                                              [passages[i] for i in chunk]))
                if not generate:
                    bar.update(len(chunk))
                    continue
                ctxs = [contexts[i] if compressor is not None else None for i in chunk]
                if batch_size <= 1:
                    generations.append(generator.answer(questions[chunk[0]], ctxs[0]))
                    bar.update(1)
                    continue
                for i, ctx in zip(chunk, ctxs, strict=True):
                    if i < ttft_questions:  # exact TTFT of this question alone (a batch's prefill is shared)
                        ttft[i] = generator.generate([generator.answer_prompt(questions[i], ctx)],
                                                     max_new_tokens=1, release=False)[0].ttft_s
                generations.extend(generator.answer_batch([questions[i] for i in chunk], ctxs))
                bar.update(len(chunk))
        finally:
            bar.close()
        loop_s = time.perf_counter() - loop_start
        config = None
        if compressor is not None:
            try:
                config = config_dict(compressor)
            except Exception:  # noqa: BLE001 - the config is informative only
                config = None
        del compressor
        gc.collect()
    records = _records(spec, examples, contexts, generations if generate else None, recalls)
    wall = round(loop_s / max(len(records), 1), 5)
    extra: dict[str, Any] = {"kind": spec.kind, "wall_per_question_s": wall, "family": spec.family}
    if spec.knob:
        extra["knob"] = spec.knob
    if scores_from:
        extra["scores_from"] = scores_from  # selection only: the sentences were scored by that row
    if generate and batch_size > 1:
        # A batch shares its prefill and decoding: no question has a TTFT or a total time of its own. TTFT is kept
        # where it was measured alone; the time per question is the method's wall time over the questions.
        for i, r in enumerate(records):
            r["batch_ttft_s"], r["batch_total_s"] = r["gen_ttft_s"], r["total_s"]
            r["gen_ttft_s"] = round(ttft[i], 5) if i in ttft else None
            r["ttft_s"] = round(r["compress_s"] + ttft[i], 5) if i in ttft else None
            r["total_s"] = None
        extra["total_s"] = wall
        extra["batch_latency_s"] = mean([r["batch_total_s"] for r in records])
    if config is not None:
        extra["config"] = jsonable(config)
    return _Run(_summarise(records, rss, extra), records)


class MemoEmbedder:
    """An embedder that remembers every text it encoded: the settings of one sweep embed each text once.

    There is one memo per sweep, so no other method's timing benefits from it.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._docs: dict[str, Any] = {}
        self._queries: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Any:
        """The inner embedder's ``encode``, computing only the texts not seen before."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._docs))
        if missing:
            for t, v in zip(missing, self.inner.encode(missing, **kwargs), strict=True):
                self._docs[t] = v
        if not texts:
            return self.inner.encode([], **kwargs)
        return np.stack([self._docs[t] for t in texts])

    def encode_query(self, text: str) -> Any:
        """The inner embedder's ``encode_query``, computed once per query text."""
        if text not in self._queries:
            self._queries[text] = self.inner.encode_query(text)
        return self._queries[text]


def _faiss_retriever(passages: Sequence[Any], embedder: Any, top_k: int, cache: str | Path | None,
                    label: str) -> tuple[Any, bool]:
    """Build the FAISS index of ``passages``, or load it from ``cache`` when an identical one was saved there.

    The cache key is the SHA-256 of the embedder name and every passage id (a content hash), in order, so a changed
    data file or embedder never reuses a stale index. Returns the retriever and whether it came from the cache.
    """
    if cache is None:
        return FaissRetriever.build(passages, embedder, top_k=top_k), False
    digest = hashlib.sha256("\n".join([str(getattr(embedder, "name", "")), *(p.id for p in passages)]).encode())
    folder = Path(cache).expanduser() / f"{label}-{digest.hexdigest()[:16]}"
    if is_saved_index(folder):
        try:
            return FaissRetriever.load(folder, embedder=embedder, top_k=top_k), True
        except RagzipError as err:
            logger.warning("index cache %s is unusable (%s); rebuilding it", folder, err)
    retriever = FaissRetriever.build(passages, embedder, top_k=top_k)
    try:
        retriever.save(folder)
    except (OSError, RagzipError) as err:
        logger.warning("could not cache the index in %s: %s", folder, err)
    return retriever, False


def _retrieve(examples: Sequence[Any], all_examples: Sequence[Any], setting: str, top_k: int,
              embedder: Any, cache: str | Path | None = None, label: str = "corpus", *, distractors: int = 0,
              seed: int = 0) -> tuple[list[list[Any]], dict[str, Any]]:
    if setting == "given" and distractors:
        passages = same_article_distractors(examples, all_examples, distractors, seed)
        info: dict[str, Any] = {"mode": "given", "top_k": None, "distractors": distractors}
    elif setting == "given":
        passages = [list(ex.passages) for ex in examples]
        info = {"mode": "given", "top_k": None}
    elif setting == "faiss":
        start = time.perf_counter()
        retriever, cached = _faiss_retriever(corpus(all_examples), embedder, top_k, cache, label)
        passages = retriever.search_batch([ex.question for ex in examples], top_k)
        info = {"mode": "faiss", "top_k": top_k, "corpus_passages": len(retriever),
                "index_s": round(time.perf_counter() - start, 2), "index_cached": cached}
    else:
        raise ConfigError(f"--setting {setting!r} is not valid; choose faiss (one FAISS index over all passages of the "
                          "file) or given (each question's own passages).")
    recalls = [recall(p, ex.gold_ids) for p, ex in zip(passages, examples, strict=False)]
    scored = [r for r in recalls if r is not None]
    info["recall_at_k"] = mean(scored) if scored else None
    info["questions_with_gold"] = len(scored)
    info["passages_per_question"] = mean([len(p) for p in passages])
    return passages, {"recalls": recalls, **info}


def run_bench(
    data: str | Path,
    methods: str | Sequence[str] | None = None,
    *,
    limit: int | None = 100,
    top_k: int = 5,
    setting: str = "faiss",
    seed: int = 0,
    generator: str | Any = "embedded:smollm2-135m",
    max_new_tokens: int | None = None,
    embedder: str | Any = "embedded:minilm",
    config: str | Path | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    batch_size: int = 1,
    warmup: bool = True,
    progress: bool = True,
    command: str | None = None,
    index_cache: str | Path | None = None,
    budget: int | None = None,
    ttft_questions: int = 20,
    generate: bool = True,
    distractors: int = 0,
    require_gold: bool = False,
    reference: str | None = None,
    budgets: Sequence[int | str] = (64, 128, 256),
    resamples: int = 1000,
) -> dict[str, Any]:
    """Run the benchmark and return the result dict (and write the files when ``out`` is given).

    Args:
        data: HotpotQA-style or NQ/SQuAD-style JSONL.
        methods: Comma-separated ``--methods`` value or a list of entries; ``None``: the default methods (every
            method that declares ``bench_default``).
        limit: Questions to run (first ``limit`` after the seeded shuffle); ``None`` for all.
        top_k: Passages retrieved per question (``faiss`` setting).
        setting: ``faiss`` or ``given``.
        seed: Shuffle and torch seed.
        generator: A model spec for :class:`~ragzip.generation.HFGenerator`, or a ready generator (tests pass tiny
            ones).
        max_new_tokens: Overrides the generator config's ``max_new_tokens`` (spec generators only).
        embedder: An embedder spec or a ready :class:`~ragzip.embed.Embedder` (retrieval and the embedding peers).
        config: A bench YAML path or an already-parsed mapping (see :func:`load_bench_config`).
        out: Where to write the JSON; ``.jsonl``, ``.md`` and ``.png`` go beside it with the same stem.
        batch_size: Questions decoded together (1: exact per-question TTFT).
        ttft_questions: With ``batch_size > 1``: the first N questions of each method are also run alone to the first
            token, and ``ttft_s`` is their mean (a batch's shared prefill is not any question's TTFT).
        warmup: Run each method once, untimed, on the first question before measuring.
        progress: Show a progress bar per method on stderr.
        command: The command line to record (the CLI passes its own).
        index_cache: Folder where the ``faiss`` index is saved and reused (keyed by the embedder and the passages'
            content ids); ``None`` builds it every time.
        budget: The equal budget (tokens) for the plain methods that declare ``equal_budget`` (``truncate``,
            ``longllmlingua``), instead of taking it from the reference method (to add rows to an earlier run at its budget).
        generate: Run the reader. ``False`` (``--no-generate``) measures only what survives compression (the
            evidence metrics) and the compression cost; the generator's model is then never loaded for text methods.
        distractors: ``given`` setting: add this many other passages of the same article (``metadata["title"]``,
            from the whole file) to each question's own, shuffled (SQuAD's same-topic distractor setting).
        require_gold: Keep only questions whose record names a gold passage (NQ-open: those with a ``context``).
        reference: A method label (or a sweep family) every row is also compared with (``diff_ci_ref``); the
            ``at_budget`` table compares every curve with it.
        budgets: Tokens-read budgets at which each curve is read (interpolated between its measured settings);
            ``"25%"`` = a quarter of the tokens ``none`` reads.
        resamples: Bootstrap resamples of the paired 95% intervals.

    Returns:
        The DESIGN §6 dict plus ``skipped``, ``setting``, ``seed``, ``budget``, ``command``, ``date``, ``machine``.

    Raises:
        ConfigError / InputError: bad method names or options, data or settings, before any model is loaded.
    """
    started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load_at_start = load_average()
    cfg = config if isinstance(config, Mapping) else load_bench_config(config)
    specs = parse_methods(default_methods() if methods is None else methods, cfg.get("methods"))
    if setting not in ("faiss", "given"):
        raise ConfigError(f"setting {setting!r} is not valid; choose faiss or given.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k = {top_k!r} must be a positive integer, e.g. 5.")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
        raise ConfigError(f"budget = {budget!r} must be a non-negative integer (tokens), e.g. 300.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size!r} must be a positive integer (1 for exact per-question TTFT).")
    if isinstance(ttft_questions, bool) or not isinstance(ttft_questions, int) or ttft_questions < 0:
        raise ConfigError(f"ttft_questions = {ttft_questions!r} must be a non-negative integer, e.g. 20.")
    if isinstance(distractors, bool) or not isinstance(distractors, int) or distractors < 0:
        raise ConfigError(f"distractors = {distractors!r} must be a non-negative integer, e.g. 4.")
    if distractors and setting != "given":
        raise ConfigError("distractors only apply to --setting given (same-article passages added to each question's "
                          "own); with faiss, retrieval picks the passages.")
    all_examples = load_qa(data)
    pool = [ex for ex in all_examples if ex.gold_ids] if require_gold else all_examples
    if not pool:
        raise InputError(f"no question of {data} names a gold passage; drop --require-gold.")
    examples = select(pool, limit, seed)

    gen = _make_generator(generator, cfg.get("generator"), max_new_tokens, batch_size)
    emb = embedder
    with_embedder = setting == "faiss" or any(s.kind == "peer" and needs_embedder(s.name) for s in specs)
    if isinstance(emb, str) and with_embedder:
        emb = Embedder(cfg.get("embedder", emb))
    passages, retrieval = _retrieve(examples, all_examples, setting, top_k, emb, index_cache, Path(data).stem,
                                    distractors=distractors, seed=seed)
    recalls = retrieval.pop("recalls")
    retrieval["embedder"] = getattr(emb, "name", str(emb)) if setting == "faiss" else None
    family_embedders: dict[str, Any] = {}  # one embedding memo per sweep: its settings embed each text once

    if generate and warmup and examples:  # first-call costs of the shared generator are not charged to anyone
        gen.answer(examples[0].question, None)
    shared: dict[str, tuple[Any, str]] = {}  # per compressor model: the first compressor built and its row

    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    failed: list[str] = []
    budget: dict[str, Any] = {} if budget is None else {"reference": "--budget", "tokens": budget}
    records_all: dict[str, list[dict[str, Any]]] = {}
    order = [s for s in specs if not s.budgeted] + [s for s in specs if s.budgeted]

    for spec in order:
        if spec.kind == "absent":
            skipped[spec.label] = (f"ragzip plugin {spec.name!r} is not in this build (ragzip.plugins.{spec.name} is "
                                   "missing or did not register)")
            continue
        if spec.kind == "peer":
            reason = missing_dependency(spec.name)
            if reason:
                skipped[spec.label] = reason
                continue
        options = dict(spec.options)
        extra: dict[str, Any] = {}
        if spec.budgeted:
            info = declaration(spec.name)
            if not budget:
                budget.update(_reference_budget(specs, results))
            if budget.get("tokens") is None:
                if info.budget_rate is None:  # no rate of its own to run at instead
                    skipped[spec.label] = ("no reference method ran to take the equal budget from (a ragzip "
                                           "compressor or a peer); give an explicit budget, e.g. "
                                           f"{method_label(spec.name, {info.budget: 256})}")
                    continue
            else:
                options[info.budget] = budget["tokens"]
                extra["budget_from"] = budget["reference"]
        logger.info("running %s on %d questions", spec.label, len(examples))
        try:
            method_embedder = emb
            if spec.knob and emb is not None and not isinstance(emb, str):
                method_embedder = family_embedders.setdefault(spec.family, MemoEmbedder(emb))
            run = _run_method(spec, options, examples, passages, recalls, generator=gen, embedder=method_embedder,
                              batch_size=batch_size, warmup=warmup, progress=progress, seed=seed,
                              ttft_questions=ttft_questions if batch_size > 1 and generate else 0,
                              generate=generate, shared=shared)
        except (MissingDependencyError, ModelNotFoundError) as err:  # not installed / no trained artifact here
            logger.warning("method %s skipped: %s", spec.label, err)
            skipped[spec.label] = f"not available: {err}"
            gc.collect()
            continue
        except Exception as err:  # noqa: BLE001 - one broken method must not lose the others' results
            logger.error("method %s failed:\n%s", spec.label, traceback.format_exc())
            skipped[spec.label] = f"failed: {type(err).__name__}: {err}"
            failed.append(spec.label)
            gc.collect()
            continue
        run.summary.update(extra)
        results[spec.label] = run.summary
        records_all[spec.label] = run.records

    shared.clear()
    family_embedders.clear()
    ordered = {s.label: results[s.label] for s in specs if s.label in results}
    add_intervals(ordered, {k: records_all[k] for k in ordered}, reference=reference, resamples=resamples, seed=seed)
    result: dict[str, Any] = {
        "data": str(data),
        "n": len(examples),
        "retrieval": retrieval,
        "generator": gen.config.model if hasattr(gen, "config") else str(generator),
        "methods": ordered,
        "skipped": {s.label: skipped[s.label] for s in specs if s.label in skipped},
        "setting": setting,
        "seed": seed,
        "limit": limit,
        "budget": budget or None,
        "generator_config": _generator_config(gen),
        "timing": {"batch_size": batch_size, "warmup": warmup, "per_question": batch_size == 1,
                   "ttft_questions": len(examples) if batch_size == 1 else min(ttft_questions, len(examples))},
        "command": command,
        "date": started_at,
        "machine": {**machine_info(), "load_avg_1m_start": load_at_start, "load_avg_1m_end": load_average()},
        "wall_s": round(time.perf_counter() - started, 1),
        "failed": failed,
        "generate": generate,
        "distractors": distractors,
        "require_gold": require_gold,
        "reference": reference,
        "curves": curves(ordered, {k: records_all[k] for k in ordered}, _resolve_budgets(budgets, ordered),
                         reference=reference, resamples=resamples, seed=seed),
    }
    result = jsonable(result)
    if out is not None:
        write_outputs(result, [r for s in specs for r in records_all.get(s.label, [])], out)
    return result


def _reference_budget(specs: Sequence[MethodSpec], results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The equal budget: mean tokens read by the first ragzip compressor that ran (else the first peer that ran)."""
    candidates = [s for s in specs if s.kind == "ragzip" and not declaration(s.name).baseline and s.label in results]
    candidates += [s for s in specs if s.kind == "peer" and not s.budgeted and s.label in results]
    if not candidates:
        return {"reference": None, "tokens": None}
    ref = candidates[0]
    return {"reference": ref.label, "tokens": int(round(results[ref.label]["context_tokens"]))}


def _make_generator(generator: str | Any, block: Mapping[str, Any] | None, max_new_tokens: int | None,
                    batch_size: int) -> Any:
    if not isinstance(generator, str):
        return generator
    data = dict(block or {})
    data["model"] = generator if generator else data.get("model", "embedded:smollm2-135m")
    if max_new_tokens is not None:
        data["max_new_tokens"] = max_new_tokens
    data["batch_size"] = batch_size
    return HFGenerator(from_dict(GeneratorConfig, data, where="generator"))


def _generator_config(gen: Any) -> Any:
    try:
        return to_dict(gen.config)
    except Exception:  # noqa: BLE001 - informative only
        return None


def _resolve_budgets(budgets: Sequence[int | str], methods: Mapping[str, Mapping[str, Any]]) -> list[int]:
    """Token budgets, with ``N%`` read as N% of the tokens ``none`` reads (dropped when ``none`` did not run)."""
    out: list[int] = []
    for b in budgets:
        if isinstance(b, str) and b.endswith("%"):
            if "none" in methods:
                out.append(max(1, int(round(float(b[:-1]) / 100 * methods["none"]["context_tokens"]))))
            else:
                logger.warning("budget %s skipped: it is a share of `none`'s tokens and `none` did not run", b)
        else:
            out.append(int(b))
    return list(dict.fromkeys(out))
