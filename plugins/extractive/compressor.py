"""The ``extractive`` compressor: keep the sentences a classifier scores as useful, in their original order."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ragzip.compressor import Compressor
from ragzip.errors import ConfigError
from ragzip.models import lazy_lock
from ragzip.plugins.extractive.config import DEFAULT_WINDOWS, ExtractiveConfig
from ragzip.plugins.extractive.modeling import ScoreItem, SentenceScorer, artifact_folder, load_scorer
from ragzip.relevance import LogisticSetGate, load_beside
from ragzip.text import Sentence, split_sentences
from ragzip.types import CompressedContext, Passage, PassageResult, Unit

logger = logging.getLogger(__name__)


@dataclass
class _Candidate:
    """One sentence of one passage of a question, with its score and generator-token count."""

    passage: int
    index: int
    score: float
    tokens: int


class ExtractiveCompressor(Compressor):
    """EXIT-style extractive compression: each sentence is classified with the query and its own passage as context.

    Sentences are split without any download (:func:`ragzip.text.split_sentences`), scored by the configured
    backbone (all passages of all questions in one batch), selected by threshold, token budget and/or top-k, and
    put back in their original order. A passage with no kept sentence is reported as ``dropped`` with the reason.

    Args:
        config: The options; the defaults when ``None``.
        scorer: A sentence scorer to use instead of loading the configured backbone (shared between copies).
        **kwargs: ``token_counter`` and ``store``, as for :class:`~ragzip.Compressor`.

    Example:
        >>> from ragzip import build_compressor
        >>> c = build_compressor({"type": "extractive", "max_tokens": 60})  # doctest: +SKIP
        >>> out = c.compress("Who wrote Hamlet?", ["Hamlet is a tragedy by Shakespeare. It rained in May."])
        >>> out.text  # doctest: +SKIP
        'Hamlet is a tragedy by Shakespeare.'
    """

    name = "extractive"
    config_class = ExtractiveConfig
    # Options that only decide which scored sentences are kept: settings that differ only in these share one scoring.
    selection_fields: ClassVar[frozenset[str]] = frozenset(
        {"threshold", "relative", "max_tokens", "top_k", "neighbors", "selective", "selective_rule",
         "retrieval_prior"})

    def __init__(self, config: ExtractiveConfig | None = None, *, scorer: SentenceScorer | None = None,
                 **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._scorer = scorer

    @property
    def scorer(self) -> SentenceScorer:
        """The sentence scorer, loaded on first use (and shared by compressors with the same model settings)."""
        if self._scorer is None:
            with lazy_lock(self):
                if self._scorer is None:
                    self._scorer = self._load_scorer()
        return self._scorer

    def _load_scorer(self) -> SentenceScorer:
        cfg = self.config
        return load_scorer(cfg.backbone, cfg.model_spec, base_model=cfg.base_model, device=cfg.device,
                           dtype=cfg.dtype, window=cfg.window or DEFAULT_WINDOWS[cfg.backbone],
                           batch_size=cfg.batch_size, use_title=cfg.use_title)

    @property
    def threshold(self) -> float | None:
        """The absolute threshold in force (None: none applies).

        The config's when set; under ``selective`` the model's calibrated threshold (the evidence floor that decides
        "nothing here"). Otherwise a budget (``max_tokens``/``top_k``) or a relative rule alone decides, and with no
        rule at all the model's defaults apply: its calibrated ``relative`` when it has one, else its calibrated
        threshold.
        """
        cfg = self.config
        if cfg.threshold is not None:
            return cfg.threshold
        if cfg.selective and cfg.selective_rule == "threshold":
            # "no evidence" needs an absolute floor: a relative rule always passes the best sentence
            return self.scorer.default_threshold
        if cfg.max_tokens is not None or cfg.top_k is not None or cfg.relative is not None:
            return None
        if getattr(self.scorer, "default_relative", None) is not None:
            return None
        return self.scorer.default_threshold

    @property
    def relative(self) -> float | None:
        """The query-adaptive ratio in force (keep scores >= ratio x the question's best), or None."""
        cfg = self.config
        if cfg.relative is not None:
            return cfg.relative
        if cfg.threshold is None and cfg.max_tokens is None and cfg.top_k is None:
            return getattr(self.scorer, "default_relative", None)
        return None

    @property
    def set_gate(self) -> LogisticSetGate:
        """The set-level relevance gate fitted beside the model (``set_gate.json``), for ``selective_rule: set_gate``."""
        if getattr(self, "_set_gate", None) is None:
            spec = self.config.model
            folder = self.model_folder()
            if folder is None:
                raise ConfigError(f"compressor[extractive].model = {spec!r} is not a folder, so it has no set gate "
                                  "(set_gate.json beside the weights); use selective_rule: threshold, or fit one with "
                                  f"`ragzip train extractive --fit-set-gate --model FOLDER --data TRAIN_FILES`.")
            self._set_gate = load_beside(folder, fix=(
                f"refit it with `ragzip train extractive --fit-set-gate --model {spec} --data TRAIN_FILES`, or set "
                "selective_rule: threshold"))
        return self._set_gate

    def model_folder(self) -> Path | None:
        """The folder of the configured model (``default`` = the shipped artifact), or ``None`` when it is not one."""
        folder = artifact_folder(self.config.model)
        return folder if folder.is_dir() else None

    def split(self, text: str) -> list[Sentence]:
        """``text`` cut into the sentences this compressor scores, each a span of the original text."""
        return split_sentences(text, max_chars=self.config.max_sentence_chars)

    # ------------------------------------------------------------------------------------------------- compress
    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        return self._compress_batch([query], [passages])[0]

    def memoize_scores(self) -> None:
        """Remember every sentence score from now on, sharing the memory with copies of this compressor.

        Several selection settings over the same questions then score each passage once (the bench's sweeps).
        """
        self._score_memo: dict[tuple[str, str, tuple[str, ...]], list[float]] | None = {}

    def with_selection(self, **options: Any) -> ExtractiveCompressor:
        """A copy that keeps sentences by other ``selection_fields`` settings (``max_tokens=64``).

        The copy shares this compressor's scorer and, when :meth:`memoize_scores` was called, its memory of scores:
        every setting then scores each sentence once. Without a memory the copy scores for itself (nothing is kept).

        Raises:
            ConfigError: an option that is not a selection setting (it would need other scores).
        """
        other = sorted(set(options) - self.selection_fields)
        if other:
            raise ConfigError(f"with_selection: {', '.join(other)} would change the scores, not only the selection; "
                              f"pass only {', '.join(sorted(self.selection_fields))}, or build another compressor.")
        clone = copy.copy(self)
        clone.config = dataclasses.replace(self.config, **options)
        return clone

    def budget_selection(self, max_tokens: int | None) -> ExtractiveCompressor:
        """A copy that keeps the best-scoring sentences under ``max_tokens``, and nothing else decides.

        None of this compressor's threshold, relative rule, top_k, neighbours, retrieval prior or selective mode
        apply (with ``max_tokens=None``, the default threshold keeps sentences).
        """
        return self.with_selection(max_tokens=max_tokens, threshold=None, relative=None, top_k=None, neighbors=0,
                                   selective=False, selective_rule="threshold", retrieval_prior=0.0)

    def score_sentences(self, queries: list[str], passages: list[list[Passage]],
                        splits: list[list[list[Sentence]]] | None = None) -> list[list[list[float]]]:
        """P(useful) of every sentence, ``[question][passage][sentence]``, all questions in one scorer call.

        Other compressors use it too: the abstractive one gates "nothing helps" on the best score.
        """
        if splits is None:
            splits = [[self.split(p.text) for p in ps] for ps in passages]
        items = [
            ScoreItem(q, _title(p) if self.config.use_title else "", tuple(s.text for s in sents))
            for q, ps, ss in zip(queries, passages, splits, strict=True) for p, sents in zip(ps, ss, strict=True)
        ]
        memo = getattr(self, "_score_memo", None)
        if memo is None:
            flat = iter(self.scorer.score(items) if items else [])
        else:
            todo = list(dict.fromkeys(it for it in items if it not in memo))
            for it, row in zip(todo, self.scorer.score(todo) if todo else [], strict=True):
                memo[it] = row
            flat = iter([memo[it] for it in items])
        return [[next(flat) for _ in ps] for ps in passages]

    def _compress_batch(self, queries: list[str], passages: list[list[Passage]]) -> list[CompressedContext]:
        splits = [[self.split(p.text) for p in ps] for ps in passages]
        per_question = iter(self.score_sentences(queries, passages, splits))
        counter = self.token_counter
        sentence_tokens = iter(counter.count_many([s.text for ss in splits for sents in ss for s in sents]))
        passage_tokens = iter(counter.count_many([p.text for ps in passages for p in ps]))
        outputs = []
        for query, ps, ss in zip(queries, passages, splits, strict=True):
            scored = next(per_question)
            tokens = [[next(sentence_tokens) for _ in sents] for sents in ss]
            before = [next(passage_tokens) for _ in ps]
            outputs.append(self._select(query, ps, ss, scored, tokens, before))
        return outputs

    def _select(self, query: str, passages: list[Passage], splits: list[list[Sentence]], scores: list[list[float]],
                tokens: list[list[int]], before: list[int]) -> CompressedContext:
        cfg = self.config
        if cfg.selective and cfg.selective_rule == "set_gate":
            gate = self.set_gate
            p = gate.probability(scores)
            if p < gate.threshold:
                return self._nothing(query, passages, splits, scores, before, p, gate.threshold)
        threshold = self.threshold
        relative = self.relative
        budgeted = cfg.max_tokens is not None or cfg.top_k is not None
        # Headings (and table rules) are context for their section, not evidence: never selected on their own score;
        # a heading comes along with a selected unit of its section (its tokens count against the budget).
        heading_of = [_section_headings(sents) for sents in splits]
        candidates = [
            _Candidate(i, k, s, n)
            for i, (row, counts) in enumerate(zip(scores, tokens, strict=True))
            for k, (s, n) in enumerate(zip(row, counts, strict=True))
            if getattr(splits[i][k], "kind", "sentence") not in _CONTEXT_KINDS
        ]
        prior = _rank_prior(passages, cfg.retrieval_prior) if budgeted else [0.0] * len(passages)
        ranked = sorted(candidates, key=lambda c: (-(c.score + prior[c.passage]), c.passage, c.index))
        best_score = max((c.score for c in candidates), default=0.0)
        floor = relative * best_score if relative is not None and ranked else None
        passing = [c for c in ranked if (threshold is None or c.score >= threshold) and (floor is None or c.score >= floor)]
        kept: set[tuple[int, int]] = set()
        budget = cfg.max_tokens
        chosen = 0
        skipped_budget: set[int] = set()
        skipped_top_k: set[int] = set()
        for c in passing:
            if cfg.top_k is not None and chosen >= cfg.top_k:
                skipped_top_k.add(c.passage)
                continue
            add = [(c.passage, k) for k in _around(c.index, cfg.neighbors, len(splits[c.passage]))]
            heading = heading_of[c.passage][c.index]
            if heading is not None:
                add.append((c.passage, heading))
            add = [key for key in add if key not in kept]
            cost = sum(tokens[p][k] for p, k in add)
            if budget is not None and cost > budget:
                skipped_budget.add(c.passage)
                continue
            kept.update(add)
            chosen += 1
            if budget is not None:
                budget -= cost
        reason = ""
        fallback = False
        if not kept and ranked:
            best = max(ranked, key=lambda c: c.score)
            if not passing and threshold is not None:
                why = f"no sentence scored >= threshold {threshold:.3g} (best {best.score:.3g})"
            elif not passing:
                why = f"no sentence scored >= relative {relative:.3g} x the best score (best {best.score:.3g})"
            else:
                why = f"no passing sentence fits max_tokens={cfg.max_tokens}"
            if cfg.selective:
                reason = f"selective: {why}; answer without context"
            elif budget is None or best.tokens <= budget:
                kept.add((best.passage, best.index))
                fallback = True
                reason = f"{why}; kept the best-scoring sentence (set selective: true to return no context instead)"
            else:
                reason = why
        results = []
        for i, (passage, sentences) in enumerate(zip(passages, splits, strict=True)):
            keep = [k for k in range(len(sentences)) if (i, k) in kept]
            units = tuple(Unit(k, s.text, _round(scores[i][k]), (i, k) in kept, start=s.start, end=s.end,
                               kind=getattr(s, "kind", "sentence")) for k, s in enumerate(sentences))
            row = scores[i]
            extra = {"threshold": threshold, "n_sentences": len(sentences),
                     "best_score": _round(max(row)) if row else None}
            if len(keep) == len(sentences):
                results.append(PassageResult(passage, passage.text, "kept", reason="every sentence kept", units=units,
                                             tokens_before=before[i], tokens_after=before[i], extra=extra))
                continue
            if not keep:
                results.append(PassageResult(passage, "", "dropped", reason=self._drop_reason(
                    i, row, threshold, skipped_budget, skipped_top_k, reason), units=units,
                    tokens_before=before[i], extra=extra))
                continue
            text = _join(passage.text, [sentences[k] for k in keep])
            note = " (best-scoring sentence kept as fallback)" if fallback else ""
            results.append(PassageResult(passage, text, "compressed",
                                         reason=f"kept {len(keep)} of {len(sentences)} sentences{note}", units=units,
                                         tokens_before=before[i], tokens_after=self.token_counter.count(text),
                                         extra=extra))
        extra = {"threshold": threshold, "relative": relative}
        if any(prior):
            extra["retrieval_prior"] = cfg.retrieval_prior
        return self.context(query, results, reason=reason, extra=extra)

    def _nothing(self, query: str, passages: list[Passage], splits: list[list[Sentence]], scores: list[list[float]],
                 before: list[int], p: float, threshold: float) -> CompressedContext:
        """``selective_rule: set_gate`` said the set holds no evidence: every passage dropped, no context."""
        reason = (f"selective: the set relevance gate gave P(the passages hold the evidence) = {p:.3f}, below "
                  f"{threshold:.3g}; answer without context")
        results = []
        for i, (passage, sentences) in enumerate(zip(passages, splits, strict=True)):
            units = tuple(Unit(k, s.text, _round(scores[i][k]), False, start=s.start, end=s.end,
                               kind=getattr(s, "kind", "sentence")) for k, s in enumerate(sentences))
            results.append(PassageResult(passage, "", "dropped", reason=reason, units=units, tokens_before=before[i],
                                         extra={"threshold": None, "n_sentences": len(sentences),
                                                "best_score": _round(max(scores[i])) if scores[i] else None}))
        return self.context(query, results, reason=reason,
                            extra={"threshold": None, "relative": self.relative, "set_gate": round(p, 4)})

    def _drop_reason(self, i: int, row: list[float], threshold: float | None, skipped_budget: set[int],
                     skipped_top_k: set[int], reason: str) -> str:
        best = max(row) if row else float("nan")
        if i in skipped_budget:
            return f"max_tokens={self.config.max_tokens} spent on higher-scoring sentences (best here {best:.3g})"
        if i in skipped_top_k:
            return f"top_k={self.config.top_k} filled by higher-scoring sentences (best here {best:.3g})"
        if reason.startswith("selective") and threshold is not None:
            return (f"selective: no sentence of the question scored >= threshold {threshold:.3g} (best here "
                    f"{best:.3g}); answer without context")
        if reason.startswith("selective"):
            return reason
        if threshold is not None:
            return f"no sentence scored >= threshold {threshold:.3g} (best {best:.3g})"
        return "not among the selected sentences"


_CONTEXT_KINDS = frozenset({"heading", "table_rule"})


def _rank_prior(passages: Sequence[Passage], weight: float) -> list[float]:
    """``weight / rank`` per passage, ranked by retrieval order (the first passage is rank 1).

    Retrievers and rerankers return their best passage first, whether their scores are similarities or distances,
    so the order is the ranking. All zero when the weight is 0, or when the passages carry no usable ranking: a
    passage without a finite retrieval score (given passages), or every score equal (a retriever that does not rank).
    """
    scores = [p.score for p in passages]
    if not weight or not passages or any(s is None or not math.isfinite(s) for s in scores) or len(set(scores)) == 1:
        return [0.0] * len(passages)
    return [weight / rank for rank in range(1, len(passages) + 1)]


def _section_headings(sentences: Sequence[Sentence]) -> list[int | None]:
    """For each unit, the index of the nearest heading before it (None before the first heading, and for headings)."""
    out: list[int | None] = []
    current: int | None = None
    for s in sentences:
        if getattr(s, "kind", "sentence") == "heading":
            current = len(out)
            out.append(None)
        else:
            out.append(current)
    return out


def _title(passage: Passage) -> str:
    title = passage.metadata.get("title", "")
    return title if isinstance(title, str) else ""


def _round(x: float) -> float:
    return round(float(x), 6)


def _around(k: int, n: int, size: int) -> list[int]:
    """Sentence ``k`` first, then its neighbours within ``n`` on each side, inside ``[0, size)``."""
    return [k] + [j for d in range(1, n + 1) for j in (k - d, k + d) if 0 <= j < size]


def _join(text: str, sentences: Sequence[Sentence]) -> str:
    """Rebuild text from kept sentences.

    Runs of adjacent sentences keep their original characters; gaps become a space, or the line break(s) the original
    had there.
    """
    parts: list[str] = []
    prev_end = -1
    run_start = -1
    for s in sentences:
        if run_start < 0:
            run_start = s.start
        elif text[prev_end:s.start].strip():  # something was dropped in between: close the run
            parts.append(text[run_start:prev_end])
            gap = text[prev_end:s.start]
            parts.append("\n\n" if "\n\n" in gap else "\n" if "\n" in gap else " ")
            run_start = s.start
        prev_end = s.end
    if run_start >= 0:
        parts.append(text[run_start:prev_end])
    return "".join(parts)
