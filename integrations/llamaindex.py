"""LlamaIndex adapters: a node postprocessor over any ragzip compressor, ragzip's generator as an LLM, its embedder.

Install with ``pip install 'ragzip[llamaindex]'``.

Example:
    >>> from ragzip.integrations.llamaindex import RagzipEmbedding, RagzipLLM, RagzipPostprocessor, qa_prompt
    >>> llm = RagzipLLM.from_yaml("ragzip.yaml")  # doctest: +SKIP
    >>> engine = index.as_query_engine(  # doctest: +SKIP
    ...     node_postprocessors=[RagzipPostprocessor.from_yaml("ragzip.yaml", llm=llm)],
    ...     llm=llm, text_qa_template=qa_prompt("ragzip.yaml"),
    ... )

What the postprocessor returns (the rules are the same in the LangChain adapter):

* One node per passage the LLM reads, in retrieval order, each a **copy** of its input node (same id, metadata,
  relationships and score) holding the compressed text. Passages are never merged. Input nodes are never mutated.
* ``node.metadata["ragzip"]`` is the passage's provenance (:meth:`ragzip.PassageResult.provenance`: decision, reason,
  retrieval score, tokens before/after, and per unit its text, score, whether the LLM reads it, its kind and its
  character span ``start``/``end`` in the original node text, for highlighting and citing; after a chain, ``stages``
  lists every stage's decision and units); the key is excluded from the LLM and embedding metadata modes, so it
  never reaches the prompt.
* Dropped passages are left out of the output but stay visible: in the ``RERANKING`` callback event's end payload
  (``"ragzip"``: a report with every decision), in :attr:`RagzipPostprocessor.last_context` and in an INFO log line
  (a WARNING when nothing at all is left). ``keep_dropped=True`` returns every input passage instead, the dropped ones
  with empty text and their decision.
* A compressor that fuses passages into one summary (``abstractive``) yields one summary node whose
  ``metadata["ragzip"]`` has ``decision="summary"`` and lists every source passage's id and decision under
  ``"sources"``; an empty summary (selective augmentation: "nothing here helps") yields no node.
* Soft compressors (``xrag``, ``refrag``) yield nodes whose text holds soft-token placeholders. Only
  :class:`RagzipLLM` reads them; the postprocessor adds a :class:`SoftTokenGuard` to its callback manager (which a
  query engine shares with its LLM), so any other LLM fails with :class:`~ragzip.SoftTokenError` instead of being sent
  placeholder text. Caveat: LlamaIndex's refine/compact synthesizers catch ``ValueError`` from the LLM call and
  only log it ("Structured response error: ...") before answering "Empty Response"; while ``SoftTokenError`` is a
  ``ValueError``, that is how a guarded query engine reports it (the placeholders still never reach the LLM).
* Synthesizers split contexts that do not fit one prompt. Give them :meth:`RagzipLLM.prompt_helper`
  (``get_response_synthesizer(llm=llm, prompt_helper=llm.prompt_helper())``, or ``Settings.prompt_helper``): it counts
  placeholders as the positions they fill and never cuts or repeats one, where LlamaIndex's default counts each as
  about 25 tokens and overlaps chunks (a placeholder sent twice is a :class:`~ragzip.SoftTokenError`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragzip.integrations._lazy import require

require("llama_index.core", feature="ragzip.integrations.llamaindex")

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload  # noqa: E402
from llama_index.core.callbacks.base_handler import BaseCallbackHandler  # noqa: E402
from llama_index.core.indices.prompt_helper import PromptHelper  # noqa: E402
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback  # noqa: E402
from llama_index.core.llms.custom import CustomLLM  # noqa: E402
from llama_index.core.node_parser import TokenTextSplitter  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.prompts import ChatPromptTemplate  # noqa: E402
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode  # noqa: E402

from ragzip.compressor import Compressor  # noqa: E402
from ragzip.config_utils import unknown_key_message  # noqa: E402
from ragzip.errors import ConfigError, SoftTokenError  # noqa: E402
from ragzip.integrations._common import (  # noqa: E402
    METADATA_KEY,
    AsyncBatcher,
    check_reader_store,
    compressor_from_yaml,
    generation_kwargs,
    generator_from_yaml,
    generator_of,
    guard_prompt,
    log_report,
    passage_from,
    resolve_compressor,
    resolve_embedder,
    resolve_generator,
    summary_record,
    track_store,
)
from ragzip.quiet import quiet_dependencies  # noqa: E402
from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore, has_placeholder, split_prompt  # noqa: E402
from ragzip.types import CompressedContext, content_id  # noqa: E402

__all__ = ["RagzipEmbedding", "RagzipLLM", "RagzipPostprocessor", "SoftTokenGuard", "qa_prompt"]

logger = logging.getLogger(__name__)


def _exclude_key(keys: Sequence[str] | None) -> list[str]:
    keys = list(keys or [])
    return keys if METADATA_KEY in keys else [*keys, METADATA_KEY]


def _copy_node(node: BaseNode, text: str, record: dict[str, Any]) -> BaseNode:
    """A copy of ``node`` holding ``text`` and the provenance ``record``; the input node is left untouched."""
    changed = text != node.get_content(metadata_mode=MetadataMode.NONE)
    prior = node.metadata.get(METADATA_KEY)
    if isinstance(prior, dict):  # an earlier ragzip postprocessor: keep its record, spans in the text it read
        record = {**record, "upstream": prior}
    new = node.model_copy(update={
        "metadata": {**node.metadata, METADATA_KEY: record},
        "excluded_llm_metadata_keys": _exclude_key(node.excluded_llm_metadata_keys),
        "excluded_embed_metadata_keys": _exclude_key(node.excluded_embed_metadata_keys),
        "relationships": dict(node.relationships),
        # The node's embedding described the old text.
        "embedding": None if changed else node.embedding,
    })
    if changed:
        new.set_content(text)
    return new


# ------------------------------------------------------------------------------------------------ postprocessor
class RagzipPostprocessor(BaseNodePostprocessor):
    """Compresses retrieved nodes with any registered ragzip compressor (or chain of them).

    Args:
        compressor: A built :class:`~ragzip.Compressor` (``ragzip.build_compressor(...)``).
        config: Or the compressor's config: one ``{"type": ..., ...}`` dict, or a list of them (a chain).
        keep_dropped: Return dropped passages too, with empty text and their decision.
        guard_foreign_llms: When the output holds soft tokens, add a :class:`SoftTokenGuard` to the callback manager
            so that an LLM other than :class:`RagzipLLM` fails clearly.
        callback_manager: LlamaIndex callback manager (a query engine sets its own).

    Example:
        >>> from llama_index.core.schema import NodeWithScore, TextNode
        >>> post = RagzipPostprocessor(config={"type": "truncate", "max_tokens": 3, "tokenizer": "whitespace"})
        >>> nodes = [NodeWithScore(node=TextNode(text="one two three four", id_="n1"), score=0.9)]
        >>> out = post.postprocess_nodes(nodes, query_str="What?")
        >>> out[0].node.text, out[0].node.metadata["ragzip"]["decision"]
        ('one two three', 'compressed')
    """

    keep_dropped: bool = Field(
        default=False,
        description="Return dropped passages too, with empty text and their decision in metadata['ragzip'].",
    )
    guard_foreign_llms: bool = Field(
        default=True,
        description="Make LLMs other than RagzipLLM fail clearly when the context holds soft-token placeholders.",
    )
    method: str = Field(default="", description="The compressor's name (its YAML `type:`, or a chain of them).")

    _compressor: Compressor = PrivateAttr()
    _batcher: AsyncBatcher = PrivateAttr()
    _last_context: CompressedContext | None = PrivateAttr(default=None)

    def __init__(
        self,
        compressor: Compressor | None = None,
        *,
        config: Any = None,
        keep_dropped: bool = False,
        guard_foreign_llms: bool = True,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        for key in kwargs:  # pydantic would ignore a misspelt option silently
            if key not in type(self).model_fields:
                raise ConfigError(unknown_key_message(key, sorted({*type(self).model_fields, "compressor", "config"}),
                                                      "RagzipPostprocessor"))
        built = resolve_compressor(compressor, config, who="RagzipPostprocessor")
        super().__init__(keep_dropped=keep_dropped, guard_foreign_llms=guard_foreign_llms, method=built.name,
                         callback_manager=callback_manager or CallbackManager([]), **kwargs)
        self._compressor = built
        self._batcher = AsyncBatcher(built)
        track_store(built.store)

    @classmethod
    def class_name(cls) -> str:
        return "RagzipPostprocessor"

    @classmethod
    def from_yaml(cls, path: str | Path, *, llm: Any = None, **kwargs: Any) -> RagzipPostprocessor:
        """Build from the ``compressor:`` block of a ragzip YAML; ``llm`` (a :class:`RagzipLLM`) binds it.

        Example:
            >>> RagzipPostprocessor.from_yaml("examples/ragzip.yaml")  # doctest: +SKIP
        """
        post = cls(compressor_from_yaml(path), **kwargs)
        if llm is not None:
            post.bind(llm)
        return post

    @property
    def compressor(self) -> Compressor:
        """The ragzip compressor this postprocessor runs."""
        return self._compressor

    @property
    def last_context(self) -> CompressedContext | None:
        """The :class:`~ragzip.CompressedContext` of the most recent call: every passage's decision.

        Under concurrent use it is whichever call finished last; read the callback payload for per-call results.
        """
        return self._last_context

    def bind(self, llm: Any) -> RagzipPostprocessor:
        """Count tokens with ``llm``'s tokenizer and share its soft-token store (``llm``: :class:`RagzipLLM` or an
        ``HFGenerator``). Soft compressors must be bound to the generator that reads them."""
        self._compressor.bind(generator_of(llm))
        track_store(self._compressor.store)
        return self

    # ---------------------------------------------------------------------------------------------- the work
    def _query(self, query_bundle: QueryBundle | None) -> str:
        if query_bundle is None or not str(query_bundle.query_str or "").strip():
            raise ValueError("RagzipPostprocessor needs the query to compress for: call "
                             "`postprocess_nodes(nodes, query_str=...)` or pass a QueryBundle with a non-empty "
                             "`query_str` (query engines do this for you).")
        return query_bundle.query_str

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query = self._query(query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._start_payload(nodes, query)) as event:
            context = self._compressor.compress(query, self._passages(nodes))
            out, info = self._finish(nodes, context)
            event.on_end(payload={EventPayload.NODES: out, METADATA_KEY: info})
        return out

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        """Compress in a worker thread; concurrent calls on one event loop are batched into one ``compress_batch``."""
        query = self._query(query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._start_payload(nodes, query)) as event:
            context = await self._batcher.compress(query, self._passages(nodes))
            out, info = self._finish(nodes, context)
            event.on_end(payload={EventPayload.NODES: out, METADATA_KEY: info})
        return out

    def _start_payload(self, nodes: list[NodeWithScore], query: str) -> dict[Any, Any]:
        return {EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.method, EventPayload.QUERY_STR: query}

    @staticmethod
    def _passages(nodes: list[NodeWithScore]) -> list[Any]:
        return [
            # A node's embedding (when the vector store returns it) is the retriever's vector: xrag reuses it.
            passage_from(n.node.get_content(metadata_mode=MetadataMode.NONE), id=n.node.node_id,
                         metadata=n.node.metadata, score=n.score, embedding=n.node.embedding)
            for n in nodes
        ]

    def _finish(self, nodes: list[NodeWithScore], context: CompressedContext) -> tuple[list[NodeWithScore], dict]:
        self._last_context = context
        info = log_report(context, self.class_name())
        info["context"] = context
        if context.soft and self.guard_foreign_llms:
            SoftTokenGuard.install(self.callback_manager)
        return self._to_nodes(nodes, context), info

    def _to_nodes(self, nodes: list[NodeWithScore], context: CompressedContext) -> list[NodeWithScore]:
        out: list[NodeWithScore] = []
        if context.summary is not None:
            if context.summary:
                scores = [n.score for n in nodes if n.score is not None]
                record = summary_record(context)
                node = TextNode(
                    text=context.summary,
                    id_=f"ragzip-summary-{content_id(context.query + chr(0) + context.summary)}",
                    metadata={METADATA_KEY: record},
                    excluded_llm_metadata_keys=[METADATA_KEY],
                    excluded_embed_metadata_keys=[METADATA_KEY],
                )
                out.append(NodeWithScore(node=node, score=max(scores) if scores else None))
            if self.keep_dropped:
                out.extend(NodeWithScore(node=_copy_node(n.node, "", r.provenance()), score=n.score)
                           for n, r in zip(nodes, context.results, strict=True))
            return out
        for n, result in zip(nodes, context.results, strict=True):
            if result.text or self.keep_dropped:
                out.append(NodeWithScore(node=_copy_node(n.node, result.text, result.provenance()), score=n.score))
        return out


# -------------------------------------------------------------------------------------------------------- guard
RAGZIP_LLM_CLASS_NAMES = frozenset({"RagzipLLM"})


class SoftTokenGuard(BaseCallbackHandler):
    """Raises :class:`~ragzip.SoftTokenError` when a prompt with live soft-token placeholders reaches an LLM other
    than :class:`RagzipLLM` (a remote API would otherwise read them as garbage text).

    :class:`RagzipPostprocessor` installs it on its callback manager when its output holds soft tokens (a query engine
    shares that manager with its LLM). Add it yourself elsewhere, e.g.
    ``Settings.callback_manager.add_handler(SoftTokenGuard())``.

    Args:
        strict: Also reject text that only looks like a placeholder (by default only placeholders a ragzip store would
            resolve count, so a retrieved document cannot break the pipeline by quoting one).
    """

    def __init__(self, strict: bool = False) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.strict = strict

    @classmethod
    def install(cls, callback_manager: CallbackManager) -> SoftTokenGuard:
        """Add a guard to ``callback_manager`` unless it has one; return the guard in place."""
        for handler in callback_manager.handlers:
            if isinstance(handler, cls):
                return handler
        guard = cls()
        callback_manager.add_handler(guard)
        return guard

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        if event_type != CBEventType.LLM or not payload:
            return event_id
        model = payload.get(EventPayload.SERIALIZED) or {}
        name = model.get("class_name") if isinstance(model, dict) else None
        if name in RAGZIP_LLM_CLASS_NAMES:
            return event_id
        texts: list[str] = []
        if isinstance(payload.get(EventPayload.PROMPT), str):
            texts.append(payload[EventPayload.PROMPT])
        for message in payload.get(EventPayload.MESSAGES) or []:
            content = getattr(message, "content", None)
            if isinstance(content, str):
                texts.append(content)
        for text in texts:
            guard_prompt(text, who=f"the LlamaIndex LLM {name or 'in use'}", strict=self.strict)
        return event_id

    def on_event_end(self, event_type: CBEventType, payload: dict[str, Any] | None = None, event_id: str = "",
                     **kwargs: Any) -> None:
        return None

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        return None


# ---------------------------------------------------------------------------------------------------------- LLM
def _message_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
        if role in (MessageRole.CHATBOT.value, MessageRole.MODEL.value):
            role = "assistant"
        out.append({"role": role, "content": m.content or ""})
    return out


def _context_length(generator: Any) -> int:
    """The generator's context length: its tokenizer's limit, else the model config's (read without loading the
    weights when the model is a resolvable spec), else 2048."""
    length = getattr(generator.tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < 1_000_000:
        return length
    positions = None
    try:
        from transformers import AutoConfig

        from ragzip.models import resolve

        positions = getattr(AutoConfig.from_pretrained(resolve(generator.config.model)), "max_position_embeddings",
                            None)
    except (OSError, ValueError):  # not a resolvable spec (e.g. a model object passed in): ask the model itself
        positions = getattr(getattr(generator.model, "config", None), "max_position_embeddings", None)
    return int(positions) if positions else 2048


class _SoftTextSplitter(TokenTextSplitter):
    """LlamaIndex's token splitter, splitting around soft-token placeholders, never through one."""

    def _split(self, text: str, chunk_size: int) -> list[str]:
        if not has_placeholder(text) or len(self._tokenizer(text)) <= chunk_size:
            return super()._split(text, chunk_size)
        splits: list[str] = []
        pos = 0
        for match in PLACEHOLDER_RE.finditer(text):
            if match.start() > pos:
                splits.extend(self._split(text[pos:match.start()], chunk_size))
            cost = len(self._tokenizer(match.group(0)))
            if cost > chunk_size:
                raise SoftTokenError(
                    f"a soft-token placeholder fills {cost} positions, more than the {chunk_size} tokens LlamaIndex "
                    "has left for context in one prompt, so it cannot be sent whole. Compress harder (a smaller "
                    "REFRAG `k` or a larger `p`), retrieve fewer passages, or raise RagzipLLM's `context_window` "
                    "if the model allows it.")
            splits.append(match.group(0))
            pos = match.end()
        if pos < len(text):
            splits.extend(self._split(text[pos:], chunk_size))
        return splits


class _SoftPromptHelper(PromptHelper):
    """A PromptHelper whose splitter keeps placeholders whole and never repeats one in two chunks (no overlap)."""

    @classmethod
    def class_name(cls) -> str:
        return "RagzipPromptHelper"

    def get_text_splitter_given_prompt(self, *args: Any, **kwargs: Any) -> TokenTextSplitter:
        base = super().get_text_splitter_given_prompt(*args, **kwargs)
        return _SoftTextSplitter(separator=base.separator, chunk_size=base.chunk_size, chunk_overlap=0,
                                 tokenizer=self._token_counter.tokenizer)


def _raw(generation: Any) -> dict[str, Any]:
    return dataclasses.asdict(generation) if dataclasses.is_dataclass(generation) else {"text": str(generation)}


class RagzipLLM(CustomLLM):
    """ragzip's local generator as a LlamaIndex LLM: reads soft-token placeholders in prompts as vectors.

    A chat model (``metadata.is_chat_model``): query engines call :meth:`chat`, which renders the messages with the
    model's chat template. :meth:`complete` does the same for a single user turn, unless ``formatted=True`` (the
    prompt is then decoded as raw text). Decoding is greedy and ends at the config's stop strings; streaming yields
    the whole answer as one chunk.

    Args:
        generator: A :class:`ragzip.generation.HFGenerator`.
        config: Or its config (a ``GeneratorConfig`` or a dict, e.g. ``{"model": "embedded:smollm2-135m"}``).
        store: The soft-token store to read (with ``config``); the process-wide default when ``None``.
        context_window: Overrides the model's context length.

    Example:
        >>> llm = RagzipLLM(config={"model": "embedded:smollm2-135m", "max_new_tokens": 16})  # doctest: +SKIP
        >>> llm.complete("What is the capital of France?").text  # doctest: +SKIP
        'Paris'
    """

    model_name: str = Field(default="", description="The generator's model (an embedded name, HF id or path).")
    context_window: int | None = Field(
        default=None, description="Context length in tokens; read from the tokenizer/model when not set.")
    num_output: int | None = Field(
        default=None, description="Tokens generated per answer; the generator's max_new_tokens when not set.")

    _generator: Any = PrivateAttr()
    _context_length_cache: int | None = PrivateAttr(default=None)

    def __init__(
        self,
        generator: Any = None,
        *,
        config: Any = None,
        store: SoftTokenStore | None = None,
        **kwargs: Any,
    ) -> None:
        built = resolve_generator(generator, config, store, who="RagzipLLM")
        kwargs.setdefault("model_name", built.config.model)
        super().__init__(**kwargs)
        self._generator = built
        track_store(built.store)

    @classmethod
    def class_name(cls) -> str:
        return "RagzipLLM"

    @classmethod
    def from_yaml(cls, path: str | Path, *, store: SoftTokenStore | None = None, **kwargs: Any) -> RagzipLLM:
        """Build from the ``generator:`` block of a ragzip YAML."""
        return cls(generator_from_yaml(path, store), **kwargs)

    @property
    def generator(self) -> Any:
        """The wrapped :class:`ragzip.generation.HFGenerator`."""
        return self._generator

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window or self._context_length(),
            num_output=self.num_output or self._generator.config.max_new_tokens,
            is_chat_model=True,
            model_name=self.model_name,
        )

    def _context_length(self) -> int:
        if self._context_length_cache is None:
            self._context_length_cache = _context_length(self._generator)
        return self._context_length_cache

    def count_tokens(self, text: str) -> list[int]:
        """``text`` as the generator reads it, one entry per input position: its tokens, and for each live soft-token
        placeholder one entry per vector (``-1``). LlamaIndex counts with ``len(tokenizer(text))``."""
        ids: list[int] = []
        for piece in split_prompt(text, self._generator.store):
            if isinstance(piece, str):
                ids.extend(self._generator.tokenizer(piece, add_special_tokens=False)["input_ids"])
            else:
                ids.extend([-1] * int(piece.vectors.shape[0]))
        return ids

    def prompt_helper(self, *, chunk_size_limit: int | None = None) -> PromptHelper:
        """A LlamaIndex ``PromptHelper`` that sizes prompts as this generator reads them.

        LlamaIndex's default one counts with a GPT tokenizer, in which a soft-token placeholder is about 25 tokens
        although it fills one position per vector, so it splits contexts that fit; its splitter repeats the end of
        one chunk at the start of the next (overlap), and a repeated placeholder cannot be read twice
        (:class:`~ragzip.SoftTokenError`). This one counts with :meth:`count_tokens`, keeps every placeholder whole
        and does not overlap chunks. Pass it wherever a synthesizer is built, or set ``Settings.prompt_helper``.

        Example:
            >>> from llama_index.core import get_response_synthesizer
            >>> synth = get_response_synthesizer(llm=llm, prompt_helper=llm.prompt_helper())  # doctest: +SKIP
        """
        return _SoftPromptHelper.from_llm_metadata(self.metadata, chunk_overlap_ratio=0.0,
                                                   chunk_size_limit=chunk_size_limit, tokenizer=self.count_tokens)

    # ------------------------------------------------------------------------------------------- generation
    def _check_prompt(self, text: str) -> None:
        store = self._generator.store
        check_reader_store(text, store, who="RagzipLLM")
        for handle in PLACEHOLDER_RE.findall(text):
            if store.resolve(handle) is None and store.gone(handle) == "released":
                raise SoftTokenError(
                    f"RagzipLLM got the soft-token placeholder {handle[:8]}… again after reading it (its vectors are "
                    "freed after one read). LlamaIndex sends a placeholder twice when its PromptHelper splits the "
                    "context into overlapping chunks (its default tokenizer counts a placeholder as about 25 tokens), "
                    "or when the same nodes are synthesized twice. Build the synthesizer with ragzip's prompt helper, "
                    "which counts placeholders as the generator reads them and never repeats one: "
                    "`get_response_synthesizer(llm=llm, prompt_helper=llm.prompt_helper())`, or "
                    "`Settings.prompt_helper = llm.prompt_helper()` for query engines; compress again to synthesize "
                    "again.")

    def _chat_dicts(self, messages: list[dict[str, str]], kwargs: dict[str, Any]) -> Any:
        for m in messages:
            self._check_prompt(m["content"])
        with quiet_dependencies():
            return self._generator.chat(messages, **generation_kwargs(kwargs, who="RagzipLLM"))

    def _complete(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> CompletionResponse:
        if formatted:
            self._check_prompt(prompt)
            with quiet_dependencies():
                generation = self._generator.generate([prompt], **generation_kwargs(kwargs, who="RagzipLLM"))[0]
        else:
            generation = self._chat_dicts([{"role": "user", "content": prompt}], kwargs)
        return CompletionResponse(text=generation.text, raw=_raw(generation))

    def _chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        generation = self._chat_dicts(_message_dicts(messages), kwargs)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=generation.text),
                            raw=_raw(generation))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._complete(prompt, formatted, kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        response = self._complete(prompt, formatted, kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text, raw=response.raw)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await asyncio.to_thread(self._complete, prompt, formatted, kwargs)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        response = self._chat(messages, kwargs)

        def gen() -> ChatResponseGen:
            yield ChatResponse(message=response.message, delta=response.message.content, raw=response.raw)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._chat, messages, kwargs)


# ---------------------------------------------------------------------------------------------------- embedding
class RagzipEmbedding(BaseEmbedding):
    """ragzip's embedder (``embedded:minilm`` by default) as a LlamaIndex embedding model.

    Use the same embedder as ragzip's FAISS index (xRAG reuses the index's vectors).

    Args:
        embedder: A :class:`ragzip.embed.Embedder`.
        spec: Or the model to load: ``embedded:minilm``, a sentence-transformers HF id or a local path.

    Example:
        >>> emb = RagzipEmbedding(spec="embedded:minilm")  # doctest: +SKIP
        >>> len(emb.get_query_embedding("Who designed the Eiffel Tower?"))  # doctest: +SKIP
        384
    """

    _embedder: Any = PrivateAttr()

    def __init__(self, embedder: Any = None, *, spec: str | None = None, **kwargs: Any) -> None:
        with quiet_dependencies():
            built = resolve_embedder(embedder, spec, who="RagzipEmbedding")
        kwargs.setdefault("model_name", str(getattr(built, "name", spec or "embedded:minilm")))
        super().__init__(**kwargs)
        self._embedder = built

    @classmethod
    def class_name(cls) -> str:
        return "RagzipEmbedding"

    @property
    def embedder(self) -> Any:
        """The wrapped :class:`ragzip.embed.Embedder`."""
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        import numpy as np

        with quiet_dependencies():
            return np.asarray(self._embedder.encode_query(query), dtype=np.float32).reshape(-1).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with quiet_dependencies():
            return [list(map(float, row)) for row in self._embedder.encode(list(texts))]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


# --------------------------------------------------------------------------------------------------- QA prompt
def qa_prompt(source: Any = None) -> ChatPromptTemplate:
    """ragzip's answer prompt as a LlamaIndex ``text_qa_template``: the generator's system prompt and its prompt
    template, with ``{context_str}`` and ``{query_str}`` in place of ``{context}`` and ``{question}``.

    LlamaIndex's default QA prompt is written for large models; the small embedded reader answers better with the
    prompt it was tuned on (``Reply with a short answer.`` then the context and the question), the one
    :class:`ragzip.RAGPipeline` uses.

    Args:
        source: Where the prompt comes from: a ragzip YAML path (its ``generator:`` block), a :class:`RagzipLLM`, a
            ``GeneratorConfig`` or a dict of its fields; ``None`` for the defaults.

    Example:
        >>> prompt = qa_prompt({"system_prompt": "Answer briefly."})
        >>> [m.content for m in prompt.format_messages(context_str="Paris is in France.", query_str="Where is Paris?")]
        ['Answer briefly.', 'Paris is in France.\\n\\nQuestion: Where is Paris?']
    """
    from ragzip.integrations._prompts import generator_config, qa_messages

    messages = qa_messages(generator_config(source), context="context_str", question="query_str", escape=False)
    return ChatPromptTemplate([ChatMessage(role=MessageRole(role), content=text) for role, text in messages])
