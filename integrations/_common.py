"""Framework-free helpers shared by the LlamaIndex and LangChain adapters.

Nothing here imports a framework: building the compressor from a config or a YAML file, the provenance records put
into node/document metadata, the per-call report, coalescing concurrent async calls into one ``compress_batch``, and
the foreign-LLM guard's check for live soft-token placeholders.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragzip.compressor import Compressor, build_compressor
from ragzip.errors import ConfigError, SoftTokenError
from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore, default_store, has_placeholder, reject_placeholders
from ragzip.types import CompressedContext, Passage

logger = logging.getLogger("ragzip.integrations")

METADATA_KEY = "ragzip"
"""The node/document metadata key that holds a passage's provenance (decision, scores, tokens)."""

SUMMARY_DECISION = "summary"
"""``metadata["ragzip"]["decision"]`` of the one node/document that carries an abstractive summary."""

NOT_INCLUDED = ("dropped", "empty", "duplicate")


# ----------------------------------------------------------------------------------------------------- building
def resolve_compressor(compressor: Any, config: Any, *, who: str) -> Compressor:
    """The compressor given as ``compressor=`` (a :class:`~ragzip.Compressor`) or built from ``config=``."""
    if compressor is not None and config is not None:
        raise ConfigError(f"{who}: pass either `compressor=` or `config=`, not both.")
    if compressor is None and config is None:
        raise ConfigError(
            f"{who} needs a compressor: pass `compressor=ragzip.build_compressor(...)`, "
            f"`config={{'type': 'extractive', ...}}`, or use `{who}.from_yaml('ragzip.yaml')`."
        )
    if compressor is not None:
        if not isinstance(compressor, Compressor):
            raise ConfigError(f"{who}: `compressor` must be a ragzip.Compressor, got {type(compressor).__name__}. "
                              "Build one with `ragzip.build_compressor({'type': ...})`, or pass `config=` instead.")
        return compressor
    return build_compressor(config)


def compressor_from_yaml(path: str | Path) -> Compressor:
    """Build the compressor (or chain) of a ragzip YAML's ``compressor:`` block."""
    from ragzip.config import load_config

    return build_compressor(load_config(path).compressor)


def generator_of(llm_or_generator: Any) -> Any:
    """The :class:`~ragzip.generation.HFGenerator` behind a ragzip LLM wrapper (or the generator itself)."""
    generator = getattr(llm_or_generator, "generator", llm_or_generator)
    if not (hasattr(generator, "token_counter") and hasattr(generator, "store")):
        raise ConfigError(f"cannot bind a compressor to {type(llm_or_generator).__name__}: pass ragzip's generator "
                          "(ragzip.generation.HFGenerator) or one of ragzip's LLM wrappers (RagzipLLM, RagzipChatModel).")
    return generator


def resolve_generator(generator: Any, config: Any, store: SoftTokenStore | None, *, who: str) -> Any:
    """ragzip's generator given as ``generator=``, or built from ``config=`` (a GeneratorConfig or a dict)."""
    from ragzip.config_utils import from_dict
    from ragzip.generation import GeneratorConfig, HFGenerator

    if generator is not None:
        if config is not None or store is not None:
            raise ConfigError(f"{who}: pass either `generator=` or `config=`/`store=`, not both "
                              "(the generator already has its config and store).")
        if not (hasattr(generator, "chat") and hasattr(generator, "generate")):
            raise ConfigError(f"{who}: `generator` must be a ragzip.generation.HFGenerator, got "
                              f"{type(generator).__name__}. Or pass `config={{'model': ...}}`.")
        return generator
    if config is None:
        config = GeneratorConfig()
    elif isinstance(config, Mapping):
        config = from_dict(GeneratorConfig, config, where="generator")
    elif not isinstance(config, GeneratorConfig):
        raise ConfigError(f"{who}: `config` must be a GeneratorConfig or a dict of its fields, got "
                          f"{type(config).__name__}.")
    return HFGenerator(config, store=store)


def generator_from_yaml(path: str | Path, store: SoftTokenStore | None = None) -> Any:
    """ragzip's generator from a ragzip YAML's ``generator:`` block."""
    from ragzip.config import load_config
    from ragzip.generation import HFGenerator

    return HFGenerator(load_config(path).generator, store=store)


def resolve_embedder(embedder: Any, spec: str | None, *, who: str) -> Any:
    """ragzip's embedder given as ``embedder=``, or loaded from ``spec`` (``embedded:minilm``, HF id, path)."""
    if embedder is not None:
        if spec is not None:
            raise ConfigError(f"{who}: pass either `embedder=` or `spec=`, not both.")
        if not (hasattr(embedder, "encode") and hasattr(embedder, "encode_query")):
            raise ConfigError(f"{who}: `embedder` must be a ragzip.embed.Embedder, got {type(embedder).__name__}.")
        return embedder
    from ragzip.embed import Embedder

    return Embedder(spec=spec or "embedded:minilm")


# --------------------------------------------------------------------------------------------------- provenance
def passage_from(text: str, *, id: str | None, metadata: Mapping[str, Any], score: float | None,
                 embedding: Any = None) -> Passage:
    """A :class:`~ragzip.Passage` from a framework node/document (metadata copied; ragzip's own key left out)."""
    meta = {k: v for k, v in metadata.items() if k != METADATA_KEY}
    if score is not None and (not isinstance(score, (int, float)) or isinstance(score, bool) or math.isnan(score)):
        score = None
    return Passage(text, id=id or "", metadata=meta, score=score, embedding=embedding)


def summary_record(ctx: CompressedContext) -> dict[str, Any]:
    """Provenance of a summary (abstractive) output: every source passage's id and decision."""
    return {
        "decision": SUMMARY_DECISION,
        "method": ctx.method,
        "reason": ctx.reason,
        "tokens_before": ctx.tokens_before,
        "tokens_after": ctx.tokens_after,
        "sources": [{"passage_id": r.passage.id, "decision": r.decision, "retrieval_score": r.passage.score}
                    for r in ctx.results],
    }


def report(ctx: CompressedContext) -> dict[str, Any]:
    """A JSON-friendly account of one compression call: what the generator reads and what was left out."""
    ratio = ctx.compression_ratio
    return {
        "method": ctx.method,
        "passages": len(ctx.results),
        "decisions": dict(Counter(r.decision for r in ctx.results)),
        "not_included": [{"passage_id": r.passage.id, "decision": r.decision, "reason": r.reason}
                         for r in ctx.results if r.decision in NOT_INCLUDED],
        "summary": ctx.summary is not None,
        "tokens_before": ctx.tokens_before,
        "tokens_after": ctx.tokens_after,
        "compression_ratio": None if math.isinf(ratio) else round(ratio, 3),
        "soft_tokens": sum(s.n_vectors for s in ctx.soft),
        "compress_s": round(ctx.compress_s, 4),
        "reason": ctx.reason,
    }


def log_report(ctx: CompressedContext, who: str) -> dict[str, Any]:
    """Log one line per call (INFO), and a WARNING when the generator will read nothing of a non-empty context."""
    info = report(ctx)
    logger.info("%s: %s %d passages, %d -> %d tokens, decisions %s", who, info["method"], info["passages"],
                info["tokens_before"], info["tokens_after"], info["decisions"])
    if ctx.results and not ctx.segments:
        logger.warning("%s: every passage was left out of the context (%s)%s; the LLM answers without context. "
                       "The decisions are in `last_context` and in the callback payload; set keep_dropped=True to "
                       "keep the dropped passages as empty entries.", who, info["decisions"],
                       f": {ctx.reason}" if ctx.reason else "")
    return info


# ------------------------------------------------------------------------------------------------ async batching
class AsyncBatcher:
    """Coalesces concurrent async ``compress`` calls on one event loop into a single ``compress_batch``.

    A call queues its request and schedules a flush for the next turn of the loop, so every request made in the same
    turn (``asyncio.gather`` over many questions, concurrent requests in a server) is compressed together in one
    worker thread; compressors with a model batch the work across questions. The loop is never blocked. When a batch
    fails (one bad query), each request is retried alone so that only its own caller sees the error.

    Every caller gets a result or an exception, whatever happens to the batch: a cancelled flush task, a plugin that
    returns the wrong number of results, or any other failure reaches each waiting caller instead of leaving it
    waiting forever. At most ``max_concurrent`` batches of one compressor run at once (per event loop); later ones
    wait for a slot, so a burst of requests cannot start unbounded worker threads and model copies.
    """

    def __init__(self, compressor: Compressor, *, max_batch: int = 32, max_concurrent: int = 2) -> None:
        if max_batch < 1 or max_concurrent < 1:
            raise ConfigError(f"AsyncBatcher needs max_batch >= 1 and max_concurrent >= 1, got {max_batch!r} and "
                              f"{max_concurrent!r}.")
        self.compressor = compressor
        self.max_batch = max_batch
        self.max_concurrent = max_concurrent
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[tuple[Any, Any, asyncio.Future]]] = (
            weakref.WeakKeyDictionary())
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())
        self._tasks: set[asyncio.Task] = set()

    async def compress(self, query: str, passages: Sequence[Passage]) -> CompressedContext:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        queue = self._queues.setdefault(loop, [])
        queue.append((query, list(passages), future))
        if len(queue) == 1:
            loop.call_soon(self._flush, loop)
        elif len(queue) >= self.max_batch:
            self._flush(loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._queues.pop(loop, [])
        if batch:
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)  # keep a reference until done (the loop holds tasks weakly)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda t, batch=batch: _settle(batch, t))

    async def _run(self, batch: list[tuple[Any, Any, asyncio.Future]]) -> None:
        queries = [q for q, _, _ in batch]
        passages = [p for _, p, _ in batch]
        slots = self._slots.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(self.max_concurrent))
        async with slots:
            try:
                outs: list[Any] = await asyncio.to_thread(self._batch, queries, passages)
            except Exception as err:  # noqa: BLE001 - isolate the failing request(s) below
                from ragzip.errors import PluginError

                if len(batch) == 1 or isinstance(err, PluginError):  # a broken plugin: every caller sees it
                    outs = [err] * len(batch)
                else:
                    outs = await asyncio.to_thread(self._one_by_one, queries, passages)
        for (_, _, future), out in zip(batch, outs, strict=True):
            if future.done():  # the caller was cancelled
                continue
            if isinstance(out, BaseException):
                future.set_exception(out)
            else:
                future.set_result(out)

    def _batch(self, queries: list[str], passages: list[Any]) -> list[Any]:
        from ragzip.errors import check_batch_output

        return check_batch_output(type(self.compressor).__name__,
                                  self.compressor.compress_batch(queries, passages), len(queries))

    def _one_by_one(self, queries: list[str], passages: list[Any]) -> list[Any]:
        outs: list[Any] = []
        for q, p in zip(queries, passages, strict=True):
            try:
                outs.append(self.compressor.compress(q, p))
            except Exception as err:  # noqa: BLE001 - handed to that request's caller
                outs.append(err)
        return outs


def _settle(batch: list[tuple[Any, Any, asyncio.Future]], task: asyncio.Task) -> None:
    """When the flush task ends, give every caller still waiting the task's exception (or a cancellation error)."""
    from ragzip.errors import CancelledBatchError

    if task.cancelled():
        error: BaseException = CancelledBatchError(
            "the batched compression task was cancelled before it finished (is the event loop shutting down?); "
            "retry the call.")
    else:
        error = task.exception() or CancelledBatchError("the batched compression task ended without a result for "
                                                        "this call; this is a bug in ragzip, please report it.")
    for _, _, future in batch:
        if not future.done():
            future.set_exception(error)


# ------------------------------------------------------------------------------------------ foreign-LLM guard
_STORES: weakref.WeakSet[SoftTokenStore] = weakref.WeakSet()


def track_store(store: SoftTokenStore) -> None:
    """Remember a store that adapters' compressors write to, so the guard can tell live placeholders."""
    _STORES.add(store)


def live_placeholders(text: str) -> list[str]:
    """The placeholders in ``text`` that a known store would resolve into vectors (forged and stale ones excluded)."""
    if not has_placeholder(text):
        return []
    stores = [default_store(), *list(_STORES)]
    return [m.group(0) for m in PLACEHOLDER_RE.finditer(text)
            if any(s.resolve(m.group(1)) is not None for s in stores)]


def guard_prompt(text: str, *, who: Any, strict: bool = False) -> None:
    """Raise :class:`~ragzip.SoftTokenError` when ``text`` would carry soft tokens to an LLM that cannot read them.

    By default only *live* placeholders count (ones a soft compressor just issued): text that merely looks like a
    placeholder, e.g. inside a retrieved document, is plain text and must not let a document break the pipeline.
    ``strict=True`` rejects anything placeholder-shaped.
    """
    if strict or live_placeholders(text):
        reject_placeholders(text, who=who)


def check_reader_store(prompt: str, store: SoftTokenStore, *, who: str) -> None:
    """Fail when a prompt holds live placeholders that the reading generator's store cannot resolve.

    That happens when the compressor and the generator were given different stores: the placeholders would stay
    text and the model would read garbage. ``bind`` the compressor to the generator (or share one store).
    """
    lost = [p for p in live_placeholders(prompt) if store.resolve(PLACEHOLDER_RE.fullmatch(p).group(1)) is None]
    if lost:
        raise SoftTokenError(
            f"{who}: the prompt holds {len(lost)} soft-token placeholder(s) issued by a different SoftTokenStore than "
            "the generator reads from, so they cannot be resolved. Give the compressor and the generator the same "
            "store: `postprocessor.bind(llm)` / `compressor.bind(llm)`, or build both with the default store."
        )


def generation_kwargs(kwargs: Mapping[str, Any], *, stop: Sequence[str] | None = None, who: str) -> dict[str, Any]:
    """The keyword arguments ragzip's generator understands (``max_new_tokens``/``max_tokens``, ``stop``).

    Others (sampling options that a greedy local model does not have) are logged and ignored, as host frameworks
    pass provider-specific options through these calls.
    """
    out: dict[str, Any] = {}
    if kwargs.get("max_new_tokens") is not None:
        out["max_new_tokens"] = int(kwargs["max_new_tokens"])
    elif kwargs.get("max_tokens") is not None:
        out["max_new_tokens"] = int(kwargs["max_tokens"])
    stop = stop if stop is not None else kwargs.get("stop")
    if stop is not None:
        out["stop"] = [stop] if isinstance(stop, str) else list(stop)
    ignored = sorted(k for k in kwargs if k not in ("max_new_tokens", "max_tokens", "stop"))
    if ignored:
        logger.debug("%s ignores generation options %s (ragzip's generator decodes greedily)", who, ignored)
    return out
