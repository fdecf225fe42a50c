"""``type: abstractive``: one query-focused summary of the passages (RECOMP), or none when nothing helps.

What happens to one question:

0. The extractive classifier (``gate_model``) scores every sentence once. With ``input: extracted``
   (extract-then-fuse) the summarizer reads only the sentences it keeps under ``extract_tokens``, with their
   passages' titles, instead of whole passages. The relevance gate reads the same scores: ``relevance_gate: set``
   (the set-level gate fitted beside the classifier, :mod:`ragzip.relevance`) or ``extractive`` (the best
   sentence alone); below ``gate_threshold`` the summary is empty ("nothing helps") and the summarizer is not
   called. ``extra["gate_score"]`` holds the gate's value either way, ``extra["gated"]`` the decision.
1. With ``input: passages`` each passage is cut to ``max_passage_tokens`` summarizer tokens (at a sentence end where one fits); by default
   the length the adapter was trained on (the shipped one: 96), since a small summarizer copes worst with inputs
   longer than it saw.
2. If the prompt fits ``max_input_tokens`` the summarizer is called once. Otherwise, with ``long_input: map_reduce``,
   the passages are grouped in order into prompts that fit (a single passage too long for the window is cut to fit),
   each group is summarized (map), and the non-empty partial summaries are joined when they fit
   ``max_summary_tokens`` or else summarized again as documents (reduce, never empty, repeated while they do not fit).
   With ``long_input: truncate`` every passage is cut to an equal share of the window instead.
3. Greedy decoding stops at the end token or at ``max_summary_tokens``. An end token first (or, with
   ``empty_threshold``, P(end token first) >= threshold) is an **empty summary**: nothing in the passages helps.
4. Checks on the summary: a summary that echoes the prompt (a template marker such as ``Document:``, the question
   verbatim, or no shorter than 90% of the documents) is replaced per ``on_echo`` and flagged ``echo``; one that ran
   to the length limit is cut after its last complete sentence and flagged ``truncated``; repeated sentences (a small
   LM's loop) are removed. With ``faithfulness_check``, sentences whose content words are not found in any single
   passage are dropped (:func:`support`).

An empty summary with ``on_empty: no_context`` gives ``CompressedContext(summary="")`` with a reason: the generator
then answers from the question alone (its ``no_context_template``). Every passage is reported: ``summarized`` (with
``extra["attributed"]``: does a summary sentence draw on it, ``extra["summary_sentences"]``: which), or
``dropped`` with the reason (with ``input: extracted``, also when the extractive step kept nothing of it).
``extra["sources"]`` maps every summary sentence to the passage and the sentences (unit indices) it draws on.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragzip.compressor import Compressor, build_compressor
from ragzip.data import passage_text
from ragzip.errors import ConfigError, RagzipError
from ragzip.models import infer_device
from ragzip.relevance import GATE_FILE, LogisticSetGate, SentenceSelector, load_beside
from ragzip.softstore import SoftTokenStore
from ragzip.tokens import TokenCounter
from ragzip.types import CompressedContext, Passage, PassageResult

from .config import DEFAULT_EXTRACT_TOKENS, DEFAULT_GATE_THRESHOLD, AbstractiveConfig
from .modeling import ENDS_SENTENCE, Summarizer, SummaryOutput, cut_to_tokens, read_adapter_config, split_sentences

logger = logging.getLogger(__name__)

SHIPPED_ADAPTER = Path(__file__).resolve().parent / "artifacts" / "default"
NO_EMPTY = 2.0  # an empty_threshold no probability reaches: the reduce step never decides "nothing helps"
ECHO_RATIO = 0.9
DEFAULT_PASSAGE_TOKENS = 256
EMPTY_REASON = "the summarizer found nothing in the passages that helps answer the question"
_MAX_REDUCE_ROUNDS = 4
_UNIT_SHARE = 0.3  # a summary sentence draws on a source sentence holding at least this share of its content words
# Function words left out of the faithfulness overlap (they match anything); content words carry the claim.
_STOPWORDS = frozenset("""a an the and or but if of to in on at by for with from as is are was were be been being
it its this that these those he she they them his her their him we you i not no so than then there here which who
whom whose what when where why how also has have had do does did can could will would shall should may might must
into onto over under about after before between during while such other some any each both all most more
very""".split())
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+", re.UNICODE)


def content_words(text: str) -> set[str]:
    """Lower-cased word tokens minus English function words; each CJK character is a token of its own."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def support(sentence: str, passages: list[str]) -> tuple[float, int]:
    """How well one passage supports ``sentence``: the largest fraction of its content words found in a passage.

    Returns ``(fraction, index of that passage)``; a sentence with no content word counts as supported (1.0).
    This is a lexical rule: it catches invented entities, numbers and names, not a wrong relation between words
    that all occur in the passage.
    """
    words = content_words(sentence)
    if not words:
        return 1.0, -1
    best, where = 0.0, -1
    for i, passage in enumerate(passages):
        score = len(words & content_words(passage)) / len(words)
        if score > best:
            best, where = score, i
    return best, where


@dataclass
class _Job:
    """What one question needs: its passages (cut), the groups to summarize, and what came back."""

    query: str
    passages: list[Passage]
    docs: list[str]
    cut: list[bool]
    groups: list[list[int]] = field(default_factory=list)
    window_dropped: list[int] = field(default_factory=list)
    partials: list[SummaryOutput] = field(default_factory=list)
    output: SummaryOutput | None = None
    calls: int = 0
    reduce_rounds: int = 0
    gate_score: float | None = None
    gated: bool = False
    source: list[int] = field(default_factory=list)  # docs[j] comes from passages[source[j]]
    extracted: CompressedContext | None = None  # the extractive step's result (units with scores)
    gate: str = "none"  # the gate in force for this batch (resolved once: it may read files)
    threshold: float | None = None


class AbstractiveCompressor(Compressor):
    """Summarizes the passages for the query with a (LoRA-adapted) seq2seq or causal LM; may say "nothing helps".

    Args:
        config: The options; the defaults when ``None``.
        token_counter: Counts context tokens, as for :class:`~ragzip.Compressor`.
        store: The soft-token store, as for :class:`~ragzip.Compressor`.
        summarizer: A loaded summarizer to use instead of loading the configured model and adapter.
        gate: An extractive compressor to score sentences with (relevance gate and extractive step) instead of
            building one from the config.

    Example:
        >>> from ragzip import build_compressor
        >>> c = build_compressor({"type": "abstractive"})  # doctest: +SKIP
        >>> ctx = c.compress("Who wrote Hamlet?", ["Hamlet: a play by William Shakespeare."])  # doctest: +SKIP
        >>> ctx.text, ctx.extra["empty"]  # doctest: +SKIP
        ('Hamlet: a play by William Shakespeare.', False)
    """

    name = "abstractive"
    config_class = AbstractiveConfig

    def __init__(self, config: AbstractiveConfig | None = None, *, token_counter: TokenCounter | None = None,
                 store: SoftTokenStore | None = None, summarizer: Summarizer | None = None,
                 gate: SentenceSelector | None = None) -> None:
        super().__init__(config, token_counter=token_counter, store=store)
        self.config: AbstractiveConfig
        self._summarizer = summarizer
        self._gate = gate
        self._load_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats: Counter[str] = Counter()

    # ----------------------------------------------------------------------------------------------- summarizer
    def adapter_path(self) -> Path | None:
        """The adapter folder ``adapter`` names: 'auto' = the shipped one when ``model`` is its base model."""
        spec = self.config.adapter
        if spec == "none":
            return None
        if spec == "auto":
            if not (SHIPPED_ADAPTER / "config.json").is_file():
                logger.warning("no shipped abstractive adapter at %s; summarizing with the plain model",
                               SHIPPED_ADAPTER)
                return None
            card = read_adapter_config(SHIPPED_ADAPTER)
            if card.base_model == self.config.model and card.backbone == self.config.backbone:
                return SHIPPED_ADAPTER
            return None
        path = Path(spec).expanduser()
        card = read_adapter_config(path)
        if card.base_model != self.config.model:
            logger.warning("adapter %s was trained on %r but the summarizer is %r; loading it anyway (its weights "
                           "must still fit)", path, card.base_model, self.config.model)
        return path

    @property
    def summarizer(self) -> Summarizer:
        """The summarizer, loaded on first use."""
        if self._summarizer is None:
            with self._load_lock:
                if self._summarizer is None:
                    self._summarizer = Summarizer.load(self.config.model, backbone=self.config.backbone,
                                                       adapter=self.adapter_path(),
                                                       device=infer_device(self.config.device), merge=True)
        return self._summarizer

    def _selector(self) -> SentenceSelector:
        """The extractive compressor over ``gate_model``, built through the registry on first use."""
        if self._gate is None:
            with self._load_lock:
                if self._gate is None:
                    cfg = self.config
                    built = build_compressor({"type": "extractive", "model": cfg.gate_model,
                                              "device": cfg.device or ""}, token_counter=self._token_counter)
                    if not isinstance(built, SentenceSelector):
                        raise ConfigError(f"compressor[abstractive]: the `extractive` compressor of this build "
                                          f"({type(built).__name__}) cannot score and re-select sentences; the gate "
                                          "and the extractive step need ragzip's extractive compressor.")
                    self._gate = built
        return self._gate

    @property
    def gate(self) -> SentenceSelector | None:
        """The extractive compressor that scores every sentence, for the gate and the extractive step.

        ``None`` when neither is on; loaded on first use.
        """
        if self.gate_kind == "none" and self.input_kind != "extracted":
            return None
        return self._selector()

    @functools.cached_property
    def _gate_folder(self) -> Path | None:
        """The folder of ``gate_model``, where its set gate is fitted (resolved by the extractive plugin, unloaded)."""
        probe = build_compressor({"type": "extractive", "model": self.config.gate_model})  # loads nothing
        return probe.model_folder() if isinstance(probe, SentenceSelector) else None

    @property
    def gate_kind(self) -> str:
        """The gate in force: 'set', 'extractive' (best sentence) or 'none' ('auto' resolved, threshold 0 = none)."""
        cfg = self.config
        if cfg.relevance_gate == "none" or cfg.gate_threshold == 0:
            return "none"
        if cfg.relevance_gate == "auto":
            # An explicit gate_threshold keeps the meaning it has in configs written for the best-sentence rule.
            if cfg.gate_threshold is not None:
                return "extractive"
            return self._auto_gate
        return cfg.relevance_gate

    @functools.cached_property
    def _auto_gate(self) -> str:
        """'set' when a usable set gate is fitted beside ``gate_model``, else 'extractive'.

        Decided once: an unusable gate is reported once, not re-read on every batch.
        """
        folder = self._gate_folder
        if folder is None or not (folder / GATE_FILE).is_file():
            return "extractive"
        try:
            self.set_gate  # noqa: B018 - load (and check) it now, so that auto can fall back
        except RagzipError as err:
            logger.warning("relevance_gate auto: the set gate beside %s cannot be used (%s); using the "
                           "best-sentence rule", folder, err)
            return "extractive"
        return "set"

    @property
    def set_gate(self) -> LogisticSetGate:
        """The set-level gate fitted beside ``gate_model`` (``set_gate.json``), loaded on first use."""
        if getattr(self, "_set_gate", None) is None:
            folder = self._gate_folder
            if folder is None:
                raise ConfigError(f"compressor[abstractive].gate_model = {self.config.gate_model!r} is not a folder, "
                                  "so it has no set gate; use relevance_gate: extractive, or fit one with "
                                  "`ragzip train extractive --fit-set-gate --model FOLDER --data TRAIN_FILES`.")
            self._set_gate = load_beside(folder, fix=(
                "refit it with `ragzip train extractive --fit-set-gate --model FOLDER --data TRAIN_FILES`, or set "
                "relevance_gate: extractive (the best-sentence rule)"))
        return self._set_gate

    @property
    def gate_threshold(self) -> float:
        """The threshold in force: the config's, else the set gate's calibrated one, else the best-sentence rule's."""
        return self._threshold_for(self.gate_kind)

    def _threshold_for(self, kind: str) -> float:
        if self.config.gate_threshold is not None:
            return self.config.gate_threshold
        return self.set_gate.threshold if kind == "set" else DEFAULT_GATE_THRESHOLD

    @property
    def input_kind(self) -> str:
        """What the summarizer reads: 'extracted' or 'passages' ('auto' = what the adapter was trained on)."""
        if self.config.input != "auto":
            return self.config.input
        card = self._adapter_card()
        return card.input if card is not None else "passages"

    def _adapter_card(self) -> Any:
        if self._summarizer is not None:
            return self._summarizer.adapter
        path = self.adapter_path()
        return read_adapter_config(path) if path is not None else None

    def extract_tokens(self) -> int:
        """The extractive step's token budget: the config's ``extract_tokens``, else the adapter card's, else 160."""
        if self.config.extract_tokens is not None:
            return self.config.extract_tokens
        card = self._adapter_card()
        return card.extract_tokens if card is not None and card.extract_tokens else DEFAULT_EXTRACT_TOKENS

    def _extractor(self) -> Compressor:
        """The gate's model under the extractive step's budget (one scoring pass per batch, no scores kept).

        Only the gate's model settings carry over; selection is the extractive step's budget alone, as in training
        (:meth:`SentenceSelector.budget_selection`: none of a user-supplied gate's selection settings).
        """
        gate = self.gate
        assert gate is not None
        extractor = gate.budget_selection(self.extract_tokens() if self.input_kind == "extracted" else None)
        extractor.token_counter = self.token_counter
        return extractor

    def _gate_value(self, extracted: CompressedContext, kind: str) -> float:
        scores = [[u.score if u.score is not None else math.nan for u in r.units] for r in extracted.results]
        if kind == "set":
            return self.set_gate.probability(scores)
        return max((x for row in scores for x in row if math.isfinite(x)), default=0.0)

    def gate_scores(self, queries: list[str], passages: list[list[Passage]]) -> list[float]:
        """The gate's value for each question, from one scorer call for all of them.

        P(the set holds the evidence) for the set gate; the best sentence's P(useful) for the best-sentence rule (0
        without a finite score).

        Args:
            queries: The questions.
            passages: Each question's passages.

        Returns:
            One value per question, compared with ``gate_threshold``.

        Raises:
            ConfigError: the compressor has no relevance gate.
        """
        kind = self.gate_kind
        if kind == "none":
            raise ConfigError("compressor[abstractive] has no relevance gate (relevance_gate: none or "
                              "gate_threshold: 0); set relevance_gate: extractive (or set) to score with it.")
        if not queries:
            return []
        return [self._gate_value(ctx, kind) for ctx in self._extractor().compress_batch(queries, passages)]

    def _apply_gate(self, jobs: list[_Job]) -> None:
        """Resolve the gate once for the batch; mark the jobs whose gate value is below the threshold as gated."""
        kind = self.gate_kind
        threshold = None if kind == "none" else self._threshold_for(kind)
        for job in jobs:
            job.gate, job.threshold = kind, threshold
            if threshold is not None:
                assert job.extracted is not None
                job.gate_score = self._gate_value(job.extracted, kind)
                job.gated = job.gate_score < threshold

    def _template(self) -> None:
        if self.config.prompt_template:
            self.summarizer.prompt_template = self.config.prompt_template

    def _passage_tokens(self) -> int:
        if self.config.max_passage_tokens is not None:
            return self.config.max_passage_tokens
        card = self.summarizer.adapter
        return card.max_passage_tokens if card is not None and card.max_passage_tokens else DEFAULT_PASSAGE_TOKENS

    def _threshold(self) -> float | None:
        if self.config.empty_threshold is not None:
            return self.config.empty_threshold
        card = self.summarizer.adapter
        return card.empty_threshold if card is not None else None

    # ------------------------------------------------------------------------------------------------- planning
    def _plan(self, query: str, passages: list[Passage], extracted: CompressedContext | None = None) -> _Job:
        s = self.summarizer
        docs, cut, source = [], [], []
        if self.input_kind == "extracted":
            assert extracted is not None
            for i, (p, r) in enumerate(zip(passages, extracted.results, strict=True)):
                if r.text.strip():
                    docs.append(_titled(p, r.text))
                    cut.append(False)
                    source.append(i)
        else:
            for i, p in enumerate(passages):
                text, was_cut = cut_to_tokens(p.text, self._passage_tokens(), s.tokenizer)
                docs.append(text)
                cut.append(was_cut)
                source.append(i)
        job = _Job(query, passages, docs, cut, source=source, extracted=extracted)
        if not docs:
            return job
        budget = self.config.max_input_tokens - len(s.encode_prompt(s.prompt(query, [""])))
        if budget < 16:
            raise ConfigError(f"compressor[abstractive].max_input_tokens={self.config.max_input_tokens} leaves "
                              f"{budget} tokens for passages after the prompt and question; raise it.")
        sizes = [s.count(d) + 1 for d in docs]  # +1: the newline between documents
        if sum(sizes) <= budget:
            job.groups = [list(range(len(docs)))]
        elif self.config.long_input == "truncate":
            self._plan_truncate(job, budget)
        else:
            self._plan_groups(job, budget, sizes)
        return job

    def _plan_truncate(self, job: _Job, budget: int) -> None:
        """Cut every passage to an equal share of the window; passages that still do not fit are left out."""
        s = self.summarizer
        share = max(budget // len(job.docs) - 1, 8)
        for i, doc in enumerate(job.docs):
            job.docs[i], was_cut = cut_to_tokens(doc, share, s.tokenizer)
            job.cut[i] = job.cut[i] or was_cut
        keep, used = [], 0
        for i, doc in enumerate(job.docs):
            size = s.count(doc) + 1
            if used + size <= budget:
                keep.append(i)
                used += size
            else:
                job.window_dropped.append(i)
        job.groups = [keep]

    def _plan_groups(self, job: _Job, budget: int, sizes: list[int]) -> None:
        """Map step: consecutive passages into groups that each fit the window (a too-long passage is cut)."""
        s = self.summarizer
        groups: list[list[int]] = [[]]
        used = 0
        for i, size in enumerate(sizes):
            if size > budget:
                job.docs[i], _ = cut_to_tokens(job.docs[i], budget - 1, s.tokenizer)
                job.cut[i], size = True, s.count(job.docs[i]) + 1
            if groups[-1] and used + size > budget:
                groups.append([])
                used = 0
            groups[-1].append(i)
            used += size
        job.groups = groups

    # ------------------------------------------------------------------------------------------------- decoding
    def _run(self, prompts: list[list[int]], threshold: float | None) -> list[SummaryOutput]:
        """Decode prompts in length-sorted batches of ``batch_size``; results in input order."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[SummaryOutput | None] = [None] * len(prompts)
        size = self.config.batch_size
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            for i, res in zip(idx, self.summarizer.generate([prompts[i] for i in idx],
                                                            max_new_tokens=self.config.max_summary_tokens,
                                                            empty_threshold=threshold), strict=True):
                out[i] = res
        return [o for o in out if o is not None]

    def _summarize(self, jobs: list[_Job]) -> None:
        s = self.summarizer
        threshold = self._threshold()
        tasks = [(j, g) for j in jobs for g in j.groups if g]
        outputs = self._run([s.encode_prompt(s.prompt(j.query, [j.docs[i] for i in g])) for j, g in tasks], threshold)
        for (job, _), res in zip(tasks, outputs, strict=True):
            job.partials.append(res)
            job.calls += 1
        for job in jobs:
            if len(job.groups) == 1:
                job.output = job.partials[0] if job.partials else SummaryOutput("", "", 0, 1.0, "empty")
            else:
                self._reduce(job)

    def _reduce(self, job: _Job) -> None:
        """Reduce step: join the non-empty partial summaries, or summarize them when they are too long."""
        s = self.summarizer
        parts = [p for p in job.partials if p.text]
        if not parts:
            job.output = SummaryOutput("", "", 0, min(p.p_end for p in job.partials), "empty")
            return
        texts = [p.text for p in parts]
        limit = self.config.max_summary_tokens
        budget = self.config.max_input_tokens - len(s.encode_prompt(s.prompt(job.query, [""])))
        while s.count(" ".join(texts)) > limit and job.reduce_rounds < _MAX_REDUCE_ROUNDS:
            job.reduce_rounds += 1
            groups, used = [[]], 0
            for t in texts:
                size = s.count(t) + 1
                if groups[-1] and used + size > budget:
                    groups.append([])
                    used = 0
                groups[-1].append(t)
                used += size
            results = self._run([s.encode_prompt(s.prompt(job.query, g)) for g in groups], NO_EMPTY)
            job.calls += len(groups)
            texts = [r.text for r in results if r.text] or texts
            if len(groups) == 1:
                break
        text = " ".join(texts)
        n = s.count(text)
        hit_limit = n >= limit
        if hit_limit:
            text, _ = cut_to_tokens(text, limit, s.tokenizer)
        job.output = SummaryOutput(text, text, min(n, limit), min(p.p_end for p in job.partials),
                                   "length" if hit_limit else "eos")

    # --------------------------------------------------------------------------------------------------- checks
    def _is_echo(self, summary: str, job: _Job) -> str:
        """Why ``summary`` looks like the prompt echoed back ("" when it does not)."""
        template = self.summarizer.prompt_template
        markers = [m.strip() for m in re.split(r"\{question\}|\{documents\}", template) if len(m.strip()) >= 4]
        lowered = summary.lower()
        for marker in markers:
            if marker.lower() in lowered:
                return f"contains the prompt marker {marker!r}"
        question = " ".join(job.query.lower().split())
        if len(question.split()) >= 4 and question in " ".join(lowered.split()):
            return "repeats the question verbatim"
        s = self.summarizer
        doc_tokens = sum(s.count(d) for d in job.docs)
        if doc_tokens >= 64 and s.count(summary) >= ECHO_RATIO * doc_tokens:
            return f"is no shorter than {ECHO_RATIO:.0%} of the documents"
        return ""

    @staticmethod
    def _clean(summary: str, truncated: bool) -> tuple[str, int]:
        """Drop repeated sentences and, after a length cut, the unfinished last sentence; ``(text, n_removed)``."""
        sentences = split_sentences(summary)
        seen: set[str] = set()
        kept = []
        for sent in sentences:
            key = " ".join(sent.lower().split())
            if key not in seen:
                seen.add(key)
                kept.append(sent)
        removed = len(sentences) - len(kept)
        if truncated and len(kept) > 1 and not ENDS_SENTENCE.search(kept[-1]):
            kept.pop()
        return " ".join(kept), removed

    # ------------------------------------------------------------------------------------------------- compress
    def _compress_batch(self, queries: list[str], passages: list[list[Passage]]) -> list[CompressedContext]:
        self._template()
        live = [(q, p) for q, p in zip(queries, passages, strict=True) if p]
        extracted: list[CompressedContext | None] = [None] * len(live)
        if live and self.gate is not None:  # one scoring pass for the gate and the extractive step
            extracted = list(self._extractor().compress_batch([q for q, _ in live], [p for _, p in live]))
        jobs = [self._plan(q, p, e) for (q, p), e in zip(live, extracted, strict=True)]
        self._apply_gate(jobs)
        for job in jobs:
            if job.gated:
                job.output = SummaryOutput("", "", 0, 1.0, "gated")
            elif not job.docs:
                job.output = SummaryOutput("", "", 0, 1.0, "nothing extracted")
        self._summarize([j for j in jobs if j.output is None])
        done = iter(jobs)
        return [self._finish(next(done)) if p else self.context(q, [], reason="no passages")
                for q, p in zip(queries, passages, strict=True)]

    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        return self._compress_batch([query], [passages])[0]

    def _finish(self, job: _Job) -> CompressedContext:
        assert job.output is not None
        out = job.output
        before = self.token_counter.count_many([p.text for p in job.passages])
        extra: dict[str, Any] = {
            "empty": False, "echo": False, "truncated": out.stopped == "length", "stopped": out.stopped,
            "p_end": None if out.stopped in ("gated", "nothing extracted") else round(out.p_end, 4),
            "summarizer_calls": job.calls, "map_reduce": len(job.groups) > 1, "groups": len(job.groups),
            "reduce_rounds": job.reduce_rounds, "passages_cut": sum(job.cut), "summary_raw_tokens": out.n_tokens,
            "gated": job.gated, "gate": job.gate,
            "gate_score": None if job.gate_score is None else round(job.gate_score, 4),
            "input": self.input_kind,
        }
        if self.input_kind == "extracted" and job.extracted is not None:
            extra["extract_tokens"] = self.extract_tokens()
            extra["extracted_tokens"] = sum(r.tokens_after for r in job.extracted.results)
        if job.gated:
            extra["empty"] = True
            self._count(questions=1, empty=1, gated=1)
            if job.gate == "set":
                why = (f"the set relevance gate gave P(the passages hold the evidence) = {job.gate_score:.3f}, below "
                       f"{job.threshold:.3g}")
            else:
                why = (f"the relevance gate found no sentence with P(useful) >= {job.threshold} "
                       f"(best {job.gate_score:.3f})")
            return self._empty(job, before, extra, why)
        if not job.docs:
            extra["empty"] = True
            self._count(questions=1, empty=1)
            return self._empty(job, before, extra, "the extractive step kept no sentence")
        summary = out.text
        echo = self._is_echo(summary, job) if summary else ""
        if echo:
            extra["echo"] = True
            extra["echo_reason"] = echo
            self._count(echo=1)
            return self._fallback(job, before, extra, f"the summarizer's output {echo}")
        removed = 0
        if summary:
            summary, removed = self._clean(summary, out.stopped == "length")
        extra["repeats_removed"] = removed
        sentences = split_sentences(summary) if summary else []
        read = ["" if j in job.window_dropped else doc for j, doc in enumerate(job.docs)]  # what the summarizer read
        scores = [support(sent, read) for sent in sentences]
        if self.config.faithfulness_check and scores:
            keep = [i for i, (sc, _) in enumerate(scores) if sc >= self.config.faithfulness_threshold]
            dropped = len(sentences) - len(keep)
            extra["faithfulness"] = {"sentences": len(sentences), "dropped": dropped,
                                     "support": [round(sc, 3) for sc, _ in scores]}
            self._count(faithfulness_checked=1, faithfulness_fired=int(dropped > 0), sentences_checked=len(sentences),
                        sentences_dropped=dropped)
            sentences = [sentences[i] for i in keep]
            scores = [scores[i] for i in keep]
            summary = " ".join(sentences)
        self._count(questions=1, truncated=int(extra["truncated"]), map_reduce=int(extra["map_reduce"]))
        if not summary:
            extra["empty"] = True
            self._count(empty=1)
            reason = EMPTY_REASON
            if "faithfulness" in extra and extra["faithfulness"]["sentences"]:
                reason = "the faithfulness check removed every summary sentence (none found in the passages)"
            return self._empty(job, before, extra, reason)
        sources = self._sources(job, sentences, scores)
        extra["sources"] = sources
        drawn: dict[int, list[int]] = {}
        for k, src in enumerate(sources):
            if src["passage"] is not None:
                drawn.setdefault(src["passage"], []).append(k)
        in_window = {job.source[j] for j in range(len(job.docs)) if j not in job.window_dropped}
        given = set(job.source)
        results = []
        for i, (p, n) in enumerate(zip(job.passages, before, strict=True)):
            cut_here = job.cut[job.source.index(i)] if i in given else False
            units = job.extracted.results[i].units if job.extracted is not None else ()
            info = {"attributed": i in drawn, "summary_sentences": drawn.get(i, []), "cut": cut_here}
            if i not in given:
                why = job.extracted.results[i].reason if job.extracted is not None else ""
                results.append(PassageResult(p, "", "dropped", reason=f"not kept by the extractive step ({why})",
                                             units=units, tokens_before=n, extra=info))
            elif i not in in_window:
                results.append(PassageResult(p, "", "dropped", units=units, tokens_before=n, extra=info,
                                             reason="left out: did not fit the summarizer window (long_input: "
                                                    "truncate)"))
            else:
                why = "fused into the summary" if i in drawn else "summarized; no summary sentence draws on it"
                results.append(PassageResult(p, "", "summarized", reason=why, units=units, tokens_before=n,
                                             tokens_after=0, extra=info))
        return self.context(job.query, results, summary=summary, summary_tokens=self.token_counter.count(summary),
                            extra=extra)

    def _sources(self, job: _Job, sentences: list[str], scores: list[tuple[float, int]]) -> list[dict[str, Any]]:
        """Where each summary sentence comes from.

        The passage that supports it best (the faithfulness check's alignment) and, when sentences were scored, the
        kept sentences (unit indices) whose content words it uses.
        """
        out = []
        for sentence, (score, where) in zip(sentences, scores, strict=True):
            supported = where >= 0 and score >= self.config.faithfulness_threshold
            passage = job.source[where] if supported else None
            units: list[int] = []
            if passage is not None and job.extracted is not None:
                words = content_words(sentence)
                overlaps = [(len(words & content_words(u.text)) / max(len(words), 1), u.index)
                            for u in job.extracted.results[passage].units if u.kept or self.input_kind == "passages"]
                units = sorted(k for share, k in overlaps if share >= _UNIT_SHARE)
                if not units and overlaps and max(overlaps)[0] > 0:
                    units = [max(overlaps)[1]]
            out.append({"sentence": sentence, "passage": passage,
                        "id": job.passages[passage].id if passage is not None else None,
                        "units": units, "support": round(score, 3)})
        return out

    def _empty(self, job: _Job, before: list[int], extra: dict[str, Any], reason: str) -> CompressedContext:
        if self.config.on_empty == "keep_original":
            results = [PassageResult(p, p.text, "kept", reason=f"{reason}; on_empty=keep_original passes it through",
                                     tokens_before=n, tokens_after=n)
                       for p, n in zip(job.passages, before, strict=True)]
            return self.context(job.query, results, reason=reason, extra=extra)
        results = [PassageResult(p, "", "dropped", reason=reason, tokens_before=n)
                   for p, n in zip(job.passages, before, strict=True)]
        return self.context(job.query, results, summary="", summary_tokens=0,
                            reason=f"{reason}: the generator answers without context", extra=extra)

    def _fallback(self, job: _Job, before: list[int], extra: dict[str, Any], reason: str) -> CompressedContext:
        """What replaces an echoed summary (``on_echo``)."""
        if self.config.on_echo == "no_context":
            extra["empty"] = True
            return self._empty(job, before, extra, reason)
        results: list[PassageResult] = []
        budget = self.config.max_summary_tokens if self.config.on_echo == "truncate" else None
        for p, n in zip(job.passages, before, strict=True):
            if budget is None or budget >= n:
                results.append(PassageResult(p, p.text, "kept", reason=f"{reason}; on_echo={self.config.on_echo}",
                                             tokens_before=n, tokens_after=n))
                budget = None if budget is None else budget - n
            elif budget > 0:
                text = self.token_counter.truncate(p.text, budget)
                results.append(PassageResult(p, text, "compressed", reason=f"{reason}; on_echo=truncate cut it",
                                             tokens_before=n, tokens_after=self.token_counter.count(text)))
                budget = 0
            else:
                results.append(PassageResult(p, "", "dropped", reason=f"{reason}; on_echo=truncate budget used up",
                                             tokens_before=n))
        return self.context(job.query, results, reason=reason, extra=extra)

    # ---------------------------------------------------------------------------------------------------- stats
    def _count(self, **values: int) -> None:
        with self._stats_lock:
            self._stats.update(values)

    def stats(self) -> dict[str, float]:
        """Counts since construction (questions, empty, echo, truncated, faithfulness_fired, ...) and their rates."""
        with self._stats_lock:
            counts = dict(self._stats)
        n = counts.get("questions", 0) + counts.get("echo", 0)
        out: dict[str, float] = {k: float(v) for k, v in counts.items()}
        for key in ("empty", "echo", "truncated", "map_reduce", "gated"):
            out[f"{key}_rate"] = counts.get(key, 0) / n if n else 0.0
        checked = counts.get("faithfulness_checked", 0)
        out["faithfulness_fire_rate"] = counts.get("faithfulness_fired", 0) / checked if checked else 0.0
        return out


def _titled(passage: Passage, text: str) -> str:
    """What the summarizer reads of an extracted passage: its kept sentences, after its title when they lack it."""
    title = passage.metadata.get("title", "")
    if not isinstance(title, str) or not title.strip() or text.lstrip().startswith(title.strip()):
        return text
    return passage_text(title, text)
