"""What the LlamaIndex and LangChain adapters share: their arguments turned into ragzip objects, and back.

Nothing here imports a framework. These helpers speak the adapters' language (``compressor=``/``config=``,
``keep_dropped``, ``bind(llm)``); the framework-free parts that are about ragzip's own objects live in the core:
:mod:`ragzip.batching` (async calls coalesced into one ``compress_batch``), :mod:`ragzip.report` (the per-call report
and a summary's provenance) and :mod:`ragzip.softguard` (which soft-token placeholders are live).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ragzip.compressor import Compressor, build_compressor
from ragzip.config import load_config
from ragzip.config_utils import from_dict, unknown_key_message
from ragzip.embed import Embedder
from ragzip.errors import ConfigError, SoftTokenError
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.report import report, summary_record
from ragzip.softguard import live_placeholders
from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore
from ragzip.types import CompressedContext, Passage

logger = logging.getLogger("ragzip.integrations")

METADATA_KEY = "ragzip"
"""The node/document metadata key that holds a passage's provenance (decision, scores, tokens)."""

_T = TypeVar("_T")


# ----------------------------------------------------------------------------------------------------- building
def check_kwargs(cls: type, kwargs: Mapping[str, Any], extra_names: Sequence[str] = ()) -> None:
    """Unknown constructor keys of a pydantic adapter are errors that name the key and its close match (pydantic
    would ignore them silently; LangChain #14088)."""
    valid = sorted({*getattr(cls, "model_fields", {}), *extra_names})
    for key in kwargs:
        if key not in valid:
            raise ConfigError(unknown_key_message(str(key), valid, cls.__name__))


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
    return HFGenerator(load_config(path).generator, store=store)


def resolve_embedder(embedder: Any, spec: str | None, *, who: str) -> Any:
    """ragzip's embedder given as ``embedder=``, or loaded from ``spec`` (``embedded:minilm``, HF id, path)."""
    if embedder is not None:
        if spec is not None:
            raise ConfigError(f"{who}: pass either `embedder=` or `spec=`, not both.")
        if not (hasattr(embedder, "encode") and hasattr(embedder, "encode_query")):
            raise ConfigError(f"{who}: `embedder` must be a ragzip.embed.Embedder, got {type(embedder).__name__}.")
        return embedder
    return Embedder(spec=spec or "embedded:minilm")


# --------------------------------------------------------------------------------------------------- provenance
def passage_from(text: str, *, id: str | None, metadata: Mapping[str, Any], score: float | None,
                 embedding: Any = None) -> Passage:
    """A :class:`~ragzip.Passage` from a framework node/document (metadata copied; ragzip's own key left out)."""
    meta = {k: v for k, v in metadata.items() if k != METADATA_KEY}
    if score is not None and (not isinstance(score, (int, float)) or isinstance(score, bool) or math.isnan(score)):
        score = None
    return Passage(text, id=id or "", metadata=meta, score=score, embedding=embedding)


def outputs(inputs: Sequence[_T], ctx: CompressedContext, *,
            keep_dropped: bool) -> list[tuple[_T | None, str, dict[str, Any]]]:
    """What an adapter returns for one call, in retrieval order: ``(input, text, record)`` per output item.

    ``input`` is the node/document to copy (``None`` for a fused summary, which is a new one), ``text`` what it holds
    and ``record`` its ``metadata["ragzip"]``. Passages the generator reads nothing of are left out unless
    ``keep_dropped``; a summary comes first, and an empty summary ("nothing here helps") yields nothing.
    """
    pairs = list(zip(inputs, ctx.results, strict=True))
    if ctx.summary is None:
        return [(item, r.text, r.provenance()) for item, r in pairs if r.text or keep_dropped]
    out: list[tuple[_T | None, str, dict[str, Any]]] = [(None, ctx.summary, summary_record(ctx))] if ctx.summary else []
    if keep_dropped:
        out.extend((item, "", r.provenance()) for item, r in pairs)
    return out


def with_record(metadata: Mapping[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with ragzip's ``record``; an earlier ragzip stage's record is kept under ``upstream``."""
    prior = metadata.get(METADATA_KEY)
    if isinstance(prior, dict):  # an earlier ragzip postprocessor/compressor: keep its record, spans in its input
        record = {**record, "upstream": prior}
    return {**metadata, METADATA_KEY: record}


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


# ------------------------------------------------------------------------------------------------------- LLMs
def check_reader_store(prompt: str, store: SoftTokenStore, *, who: str) -> None:
    """Fail when a prompt holds live placeholders that the reading generator's store cannot resolve.

    That happens when the compressor and the generator were given different stores: the placeholders would stay
    text and the model would read garbage. ``bind`` the compressor to the generator (or share one store).
    """
    handles = [m.group(1) for m in map(PLACEHOLDER_RE.fullmatch, live_placeholders(prompt)) if m is not None]
    lost = [h for h in handles if store.resolve(h) is None]
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
