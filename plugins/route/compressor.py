"""The ``route`` compressor: each passage read as its best sentences, as one xRAG soft token, or not at all.

Under one token budget, the form is decided per passage from the extractive classifier's sentence scores.

No published system mixes the two: EXIT/RECOMP-style extraction keeps text, xRAG replaces every passage by one vector.
The router spends the budget on text for the passages whose sentences score best, gives the passages of middling
relevance (best sentence >= ``soft_min_score`` but no room for their text) one soft token each, and drops the rest.
Every passage's route is in its provenance (``extra["route"]``: ``text``, ``soft`` or ``none``).

The stages are built through the registry (``type: extractive`` and ``type: xrag``); the router uses the
extractive compressor's public ``score_sentences``/``with_selection`` (one scoring pass, several budgets).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ragzip.compressor import Compressor, build_compressor
from ragzip.errors import ConfigError
from ragzip.models import lazy_lock
from ragzip.plugins.route.config import WHERE, RouteConfig
from ragzip.relevance import SentenceSelector
from ragzip.tokens import TokenCounter
from ragzip.types import CompressedContext, Passage

logger = logging.getLogger(__name__)

TEXT, SOFT, NONE = "text", "soft", "none"


class RouteCompressor(Compressor):
    """Text, one soft token, or nothing per passage, under one budget of generator positions.

    Args:
        config: A :class:`RouteConfig`.
        extractive: An already built extractive compressor (instead of the ``extractive`` block).
        xrag: An already built xrag compressor (instead of the ``xrag`` block).

    Example:
        >>> from ragzip import build_compressor
        >>> route = build_compressor({"type": "route", "max_tokens": 64})  # doctest: +SKIP
        >>> route.bind(generator)  # ragzip's HFGenerator reads the soft tokens  # doctest: +SKIP
        >>> ctx = route.compress("Who wrote Hamlet?", passages)  # doctest: +SKIP
        >>> [r.extra["route"] for r in ctx.results]  # doctest: +SKIP
        ['text', 'soft', 'none', 'none', 'none']
    """

    name = "route"
    config_class = RouteConfig
    # Soft through its xrag stage, which checks the generator's space and writes the tokens: no SoftCompressor, whose
    # job is trained parts of its own (the router has none), like a chain that ends in xrag.
    soft = True

    def __init__(self, config: RouteConfig | None = None, *, extractive: Compressor | None = None,
                 xrag: Compressor | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.config: RouteConfig
        self._extractive = extractive
        self._xrag = xrag

    # ------------------------------------------------------------------------------------------------- stages
    @property
    def extractive(self) -> SentenceSelector:
        """The extractive compressor that scores sentences (built from the ``extractive`` block on first use)."""
        if self._extractive is None:
            with lazy_lock(self):
                if self._extractive is None:
                    stage = build_compressor({"type": "extractive", **self.config.extractive,
                                              "tokenizer": self.config.tokenizer},
                                             token_counter=self._token_counter, store=self.store)
                    self._extractive = stage
        stage = self._extractive
        if not isinstance(stage, SentenceSelector):
            raise ConfigError(f"{WHERE}: the extractive stage {type(stage).__name__} cannot score and re-select "
                              "sentences (ragzip.relevance.SentenceSelector); the router needs ragzip's extractive "
                              "compressor (type: extractive).")
        return stage

    @property
    def xrag(self) -> Compressor:
        """The xRAG compressor that turns a passage into one soft token (built from the ``xrag`` block)."""
        if self._xrag is None:
            with lazy_lock(self):
                if self._xrag is None:
                    self._xrag = build_compressor({"type": "xrag", **self.config.xrag,
                                                   "tokenizer": self.config.tokenizer},
                                                  token_counter=self._token_counter, store=self.store)
        return self._xrag

    @property
    def token_counter(self) -> TokenCounter:
        """The counter of context tokens; setting it also sets the extractive and xRAG stages' once they are built."""
        return Compressor.token_counter.fget(self)  # type: ignore[attr-defined]

    @token_counter.setter
    def token_counter(self, counter: TokenCounter) -> None:
        self._token_counter = counter
        for stage in (self._extractive, self._xrag):
            if stage is not None:
                stage.token_counter = counter

    def bind(self, generator: Any) -> None:
        """Bind both stages to ``generator`` (its tokenizer counts the budget; its store receives the soft tokens).

        Raises:
            SoftTokenError: the xRAG projector was trained for another generator.
        """
        self.xrag.bind(generator)
        self.extractive.bind(generator)
        super().bind(generator)

    @property
    def soft_min_score(self) -> float:
        """The relevance a passage needs to be read as a soft token (the config's, else the model's threshold)."""
        if self.config.soft_min_score is not None:
            return self.config.soft_min_score
        value = getattr(self.extractive.scorer, "default_threshold", None)
        if value is None:
            raise ConfigError(f"{WHERE}.soft_min_score is empty and the extractive model has no calibrated threshold "
                              "(its scores are not probabilities); set `soft_min_score` explicitly.")
        return float(value)

    # ---------------------------------------------------------------------------------------------- compression
    def _compress(self, query: str, passages: list[Passage]) -> CompressedContext:
        return self._compress_batch([query], [passages])[0]

    def _compress_batch(self, queries: list[str], passages: list[list[Passage]]) -> list[CompressedContext]:
        extractive = self.extractive
        # Every budget tried below re-selects from one scoring pass; a fresh memory per batch, so that a long-running
        # app does not keep the scores of every question it ever saw.
        extractive.memoize_scores()
        scores = extractive.score_sentences(queries, passages)  # [question][passage][sentence], all in one call
        plans = [self._plan(q, ps, s) for q, ps, s in zip(queries, passages, scores, strict=True)]
        soft_queries = [q for q, (_, soft, _) in zip(queries, plans, strict=True) if soft]
        soft_lists = [[ps[i] for i in soft] for ps, (_, soft, _) in zip(passages, plans, strict=True) if soft]
        soft_out = iter(self.xrag.compress_batch(soft_queries, soft_lists) if soft_queries else [])
        return [self._assemble(q, plan, next(soft_out) if plan[1] else None) for q, plan in zip(queries, plans, strict=True)]

    def _soft_cost(self, passage: Passage) -> int:
        template = getattr(self.xrag.config, "context_template", "{soft}")
        title = passage.metadata.get("title", "")
        return 1 + self.token_counter.count(template.format(soft="", title=title if isinstance(title, str) else ""))

    def _plan(self, query: str, passages: list[Passage], scores: list[list[float]]
              ) -> tuple[CompressedContext, list[int], list[float]]:
        """(the text selection, the passages read as soft tokens, each passage's relevance) for one question.

        Relevance = the passage's best sentence score. Text fills the budget left after the soft tokens reserved for
        the relevant passages beyond the best one; a passage that got text needs no soft token, and the budget a
        soft token no longer needs goes back to text (a few rounds; it settles in one or two).
        """
        cfg = self.config
        relevance = [max(row) if row else 0.0 for row in scores]
        floor = self.soft_min_score
        ranked = sorted((i for i, r in enumerate(relevance) if r >= floor), key=lambda i: (-relevance[i], i))
        soft = ranked[1:1 + cfg.max_soft]  # the best passage always gets the first claim on text
        cost = {i: self._soft_cost(passages[i]) for i in ranked}  # the tokens one soft token of a passage reads
        text = None
        for _ in range(4):
            reserve = sum(cost[i] for i in soft)
            budget = cfg.max_tokens - reserve
            if budget < 1:  # the soft tokens alone would fill the budget: keep as many as fit beside some text
                soft = soft[: max(0, len(soft) - 1)]
                continue
            text = self.extractive.with_selection(max_tokens=budget).compress_batch([query], [passages])[0]
            reading = {i for i, r in enumerate(text.results) if r.text}
            again = [i for i in ranked if i not in reading][: cfg.max_soft]
            if again == soft:
                break
            soft = again
        if text is None:
            text = self.extractive.with_selection(max_tokens=cfg.max_tokens).compress_batch([query], [passages])[0]
        reading = {i for i, r in enumerate(text.results) if r.text}
        soft = [i for i in soft if i not in reading]
        spent = sum(r.tokens_after for r in text.results) + sum(cost[i] for i in soft)
        while soft and spent > cfg.max_tokens:  # never over budget: drop the least relevant soft token
            spent -= cost[soft[-1]]
            soft = soft[:-1]
        return text, sorted(soft), relevance

    def _assemble(self, query: str, plan: tuple[CompressedContext, list[int], list[float]], soft_ctx: CompressedContext | None
                  ) -> CompressedContext:
        text, soft, relevance = plan
        floor = self.soft_min_score
        soft_results = dict(zip(soft, soft_ctx.results, strict=True)) if soft_ctx is not None else {}
        results = []
        for i, chosen in enumerate(text.results):
            info = {"route": TEXT, "relevance": round(relevance[i], 6), "soft_min_score": floor}
            if i in soft_results:
                r = soft_results[i]
                results.append(dataclasses.replace(
                    r, units=chosen.units,
                    reason=f"route: one soft token (relevance {relevance[i]:.3g} >= soft_min_score {floor:.3g}, no "
                           "room for its text)",
                    extra={**r.extra, **info, "route": SOFT}))
            elif chosen.text:
                results.append(dataclasses.replace(chosen, extra={**chosen.extra, **info}))
            else:
                why = (f"relevance {relevance[i]:.3g} below soft_min_score {floor:.3g}" if relevance[i] < floor
                       else f"max_soft={self.config.max_soft} soft tokens went to more relevant passages"
                       if self.config.max_soft else "max_soft=0")
                results.append(dataclasses.replace(chosen, reason=f"route: not read ({why}); text: {chosen.reason}",
                                                   extra={**chosen.extra, **info, "route": NONE}))
        read = sum(r.tokens_after for r in results)
        return self.context(query, results, reason=text.reason,
                            extra={"max_tokens": self.config.max_tokens, "read": read,
                                   "routes": {k: sum(1 for r in results if r.extra["route"] == k)
                                              for k in (TEXT, SOFT, NONE)}})
