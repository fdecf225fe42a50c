"""LangChain adapters: a document compressor over any ragzip compressor, ragzip's generator as an LLM and a chat model,
and its embedder.

Install with ``pip install 'ragzip[langchain]'``.

Example:
    >>> from langchain_classic.retrievers import ContextualCompressionRetriever
    >>> from ragzip.integrations.langchain import RagzipChatModel, RagzipCompressor, format_documents, qa_prompt
    >>> chat = RagzipChatModel.from_yaml("ragzip.yaml")  # doctest: +SKIP
    >>> retriever = ContextualCompressionRetriever(  # doctest: +SKIP
    ...     base_compressor=RagzipCompressor.from_yaml("ragzip.yaml", llm=chat),
    ...     base_retriever=vectorstore.as_retriever())
    >>> chain = ({"context": retriever | format_documents, "question": RunnablePassthrough()}  # doctest: +SKIP
    ...          | qa_prompt("ragzip.yaml") | chat | StrOutputParser())

What the compressor returns (the same rules as the LlamaIndex postprocessor):

* One document per passage the LLM reads, in retrieval order, each a **copy** of its input document (same id and
  metadata) holding the compressed text. Documents are never merged; inputs are never mutated.
* ``doc.metadata["ragzip"]`` is the passage's provenance (:meth:`ragzip.PassageResult.provenance`: decision, reason,
  and per unit its text, score, whether the LLM reads it, its kind and its character span ``start``/``end`` in the
  original ``page_content``; after a chain, ``stages`` lists every stage's decision and units; after another ragzip
  compressor, e.g. in a ``DocumentCompressorPipeline``, its record is kept under ``upstream``, its spans in the text
  that compressor read). A document without an ``id`` gets a passage id derived from its text, so identical texts are
  reported as ``duplicate``.
* Dropped passages are left out but stay visible: :attr:`RagzipCompressor.last_context`, a ``ragzip_compression``
  custom callback event (the per-call report) and an INFO log line (a WARNING when nothing is left);
  ``keep_dropped=True`` returns them with empty ``page_content`` and their decision.
* A summary (``abstractive``) is one document with ``metadata["ragzip"]["decision"] == "summary"`` listing every
  source passage under ``"sources"``; an empty summary yields no document.
* Soft compressors (``xrag``, ``refrag``) put soft-token placeholders in ``page_content``; only :class:`RagzipLLM` and
  :class:`RagzipChatModel` read them. When such a compressor is used, :func:`install_soft_token_guard` adds a
  :class:`SoftTokenGuard` to every LangChain run in the process, so any other LLM or chat model fails with
  :class:`~ragzip.SoftTokenError` instead of receiving placeholder text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from ragzip.integrations._lazy import require

require("langchain_core", feature="ragzip.integrations.langchain")

from langchain_core.callbacks import BaseCallbackHandler, CallbackManager  # noqa: E402
from langchain_core.callbacks.manager import (  # noqa: E402
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.language_models import LLM, BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult, Generation, LLMResult  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from pydantic import ConfigDict, Field, PrivateAttr  # noqa: E402

from ragzip.compressor import Compressor  # noqa: E402
from ragzip.config_utils import unknown_key_message  # noqa: E402
from ragzip.errors import ConfigError, InputError  # noqa: E402
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
from ragzip.softstore import SoftTokenStore  # noqa: E402
from ragzip.types import CompressedContext, check_query  # noqa: E402

__all__ = [
    "RagzipChatModel",
    "RagzipCompressor",
    "RagzipEmbeddings",
    "RagzipLLM",
    "SoftTokenGuard",
    "format_documents",
    "install_soft_token_guard",
    "qa_prompt",
]

logger = logging.getLogger(__name__)

CUSTOM_EVENT = "ragzip_compression"
"""Name of the custom callback event each compression call dispatches (data: the per-call report)."""

RAGZIP_LLM_TYPES = frozenset({"ragzip", "ragzip-chat"})


def _check_kwargs(cls: type, kwargs: dict[str, Any], extra_names: Iterable[str] = ()) -> None:
    """Unknown constructor keys are errors that name the key and its close match (LangChain #14088)."""
    valid = sorted({*cls.model_fields, *extra_names})  # type: ignore[attr-defined]
    for key in kwargs:
        if key not in valid:
            raise ConfigError(unknown_key_message(str(key), valid, cls.__name__))


def _score(metadata: dict[str, Any]) -> float | None:
    for key in ("relevance_score", "score", "query_similarity_score"):
        value = metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# --------------------------------------------------------------------------------------------------- compressor
class RagzipCompressor(BaseDocumentCompressor):
    """Compresses retrieved documents with any registered ragzip compressor (or chain of them).

    Args:
        compressor: A built :class:`~ragzip.Compressor` (``ragzip.build_compressor(...)``).
        config: Or the compressor's config: one ``{"type": ..., ...}`` dict, or a list of them (a chain).
        keep_dropped: Return dropped passages too, with empty text and their decision.
        guard_foreign_llms: When a soft compressor is used, install :class:`SoftTokenGuard` process-wide.
        max_batch: Most concurrent async calls compressed in one ``compress_batch``.

    Example:
        >>> from langchain_core.documents import Document
        >>> comp = RagzipCompressor(config={"type": "truncate", "max_tokens": 2, "tokenizer": "whitespace"})
        >>> [d.page_content for d in comp.compress_documents([Document("one two three")], "What?")]
        ['one two']
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    compressor: Compressor = Field(description="The ragzip compressor (or chain) to run.")
    keep_dropped: bool = Field(
        default=False, description="Return dropped passages too, with empty text and their decision.")
    guard_foreign_llms: bool = Field(
        default=True, description="With a soft compressor, make LLMs other than ragzip's fail clearly.")
    max_batch: int = Field(default=32, ge=1, description="Most concurrent async calls compressed in one batch.")

    _batcher: AsyncBatcher = PrivateAttr()
    _last_context: CompressedContext | None = PrivateAttr(default=None)

    def __init__(self, compressor: Compressor | None = None, *, config: Any = None, **kwargs: Any) -> None:
        _check_kwargs(type(self), kwargs, ("config",))
        built = resolve_compressor(compressor, config, who="RagzipCompressor")
        super().__init__(compressor=built, **kwargs)
        self._batcher = AsyncBatcher(built, max_batch=self.max_batch)
        track_store(built.store)
        if built.soft and self.guard_foreign_llms:
            install_soft_token_guard()

    @classmethod
    def from_yaml(cls, path: str | Path, *, llm: Any = None, **kwargs: Any) -> RagzipCompressor:
        """Build from the ``compressor:`` block of a ragzip YAML; ``llm`` (a ragzip LLM/chat model) binds it."""
        comp = cls(compressor_from_yaml(path), **kwargs)
        if llm is not None:
            comp.bind(llm)
        return comp

    @property
    def last_context(self) -> CompressedContext | None:
        """The :class:`~ragzip.CompressedContext` of the most recent call: every passage's decision.

        Under concurrent use it is whichever call finished last; listen to the ``ragzip_compression`` callback event
        for per-call reports.
        """
        return self._last_context

    def bind(self, llm: Any) -> RagzipCompressor:
        """Count tokens with ``llm``'s tokenizer and share its soft-token store (``llm``: :class:`RagzipLLM`,
        :class:`RagzipChatModel` or an ``HFGenerator``). Soft compressors must be bound to their reader."""
        self.compressor.bind(generator_of(llm))
        track_store(self.compressor.store)
        return self

    # ---------------------------------------------------------------------------------------------- the work
    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Compress ``documents`` for ``query``; see the module docstring for what comes back."""
        query = check_query(query)
        if not documents:
            return []
        context = self.compressor.compress(query, self._passages(documents))
        info = self._finish(context)
        self._dispatch(callbacks, info)
        return self._to_documents(documents, context)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Compress in a worker thread; concurrent calls on one event loop are batched into one ``compress_batch``."""
        query = check_query(query)
        if not documents:
            return []
        context = await self._batcher.compress(query, self._passages(documents))
        info = self._finish(context)
        await self._adispatch(callbacks, info)
        return self._to_documents(documents, context)

    def as_runnable(self) -> RunnableLambda:
        """This compressor as a Runnable over ``{"query": str, "documents": [Document, ...]}`` (or a
        ``(query, documents)`` pair), returning the compressed documents; ``abatch`` compresses in one batch.

        Example:
            >>> comp.as_runnable().invoke({"query": "Who?", "documents": docs})  # doctest: +SKIP
        """

        def invoke(inputs: Any) -> list[Document]:
            query, docs = self._unpack(inputs)
            return list(self.compress_documents(docs, query))

        async def ainvoke(inputs: Any) -> list[Document]:
            query, docs = self._unpack(inputs)
            return list(await self.acompress_documents(docs, query))

        return RunnableLambda(invoke, afunc=ainvoke, name="RagzipCompressor")

    @staticmethod
    def _unpack(inputs: Any) -> tuple[str, Sequence[Document]]:
        if isinstance(inputs, dict):
            query = inputs.get("query", inputs.get("question"))
            docs = inputs.get("documents", inputs.get("docs"))
            if query is not None and docs is not None:
                return query, docs
        elif isinstance(inputs, (tuple, list)) and len(inputs) == 2 and isinstance(inputs[0], str):
            return inputs[0], inputs[1]
        raise InputError("RagzipCompressor.as_runnable() takes {'query': str, 'documents': [Document, ...]} or a "
                         f"(query, documents) pair, got {type(inputs).__name__}.")

    @staticmethod
    def _passages(documents: Sequence[Document]) -> list[Any]:
        return [passage_from(d.page_content, id=d.id, metadata=d.metadata, score=_score(d.metadata))
                for d in documents]

    def _finish(self, context: CompressedContext) -> dict[str, Any]:
        self._last_context = context
        if context.soft and self.guard_foreign_llms:
            install_soft_token_guard()
        return log_report(context, "RagzipCompressor")

    @staticmethod
    def _manager(callbacks: Callbacks | None) -> CallbackManager | AsyncCallbackManager | None:
        if isinstance(callbacks, (CallbackManager, AsyncCallbackManager)):
            return callbacks if callbacks.handlers else None
        if isinstance(callbacks, list) and callbacks:  # handlers passed directly
            return CallbackManager(handlers=list(callbacks))
        return None

    @classmethod
    def _dispatch(cls, callbacks: Callbacks | None, info: dict[str, Any]) -> None:
        manager = cls._manager(callbacks)
        if isinstance(manager, CallbackManager):
            manager.on_custom_event(CUSTOM_EVENT, info, run_id=manager.parent_run_id)

    @classmethod
    async def _adispatch(cls, callbacks: Callbacks | None, info: dict[str, Any]) -> None:
        manager = cls._manager(callbacks)
        if isinstance(manager, AsyncCallbackManager):
            await manager.on_custom_event(CUSTOM_EVENT, info, run_id=manager.parent_run_id)
        elif manager is not None:
            manager.on_custom_event(CUSTOM_EVENT, info, run_id=manager.parent_run_id)

    def _to_documents(self, documents: Sequence[Document], context: CompressedContext) -> list[Document]:
        def copy(doc: Document, text: str, record: dict[str, Any]) -> Document:
            prior = doc.metadata.get(METADATA_KEY)
            if isinstance(prior, dict):  # an earlier ragzip compressor (DocumentCompressorPipeline): keep its record
                record = {**record, "upstream": prior}
            return doc.model_copy(update={"page_content": text, "metadata": {**doc.metadata, METADATA_KEY: record}})

        out: list[Document] = []
        if context.summary is not None:
            if context.summary:
                out.append(Document(page_content=context.summary, metadata={METADATA_KEY: summary_record(context)}))
            if self.keep_dropped:
                out.extend(copy(d, "", r.provenance()) for d, r in zip(documents, context.results, strict=True))
            return out
        for doc, result in zip(documents, context.results, strict=True):
            if result.text or self.keep_dropped:
                out.append(copy(doc, result.text, result.provenance()))
        return out


# -------------------------------------------------------------------------------------------------------- guard
def _is_ragzip_model(serialized: dict[str, Any] | None, kwargs: dict[str, Any]) -> bool:
    params = kwargs.get("invocation_params") or {}
    if params.get("_type") in RAGZIP_LLM_TYPES:
        return True
    ident = (serialized or {}).get("id") or []
    return bool(ident) and ident[-1] in ("RagzipLLM", "RagzipChatModel") and "ragzip" in ident


def _model_name(serialized: dict[str, Any] | None, kwargs: dict[str, Any]) -> str:
    ident = (serialized or {}).get("id") or []
    return str(ident[-1]) if ident else str((kwargs.get("invocation_params") or {}).get("_type", "in use"))


class SoftTokenGuard(BaseCallbackHandler):
    """Raises :class:`~ragzip.SoftTokenError` when a prompt with live soft-token placeholders reaches an LLM or chat
    model other than ragzip's (a remote API would otherwise read them as garbage text).

    Installed process-wide by :func:`install_soft_token_guard` (which :class:`RagzipCompressor` calls for soft
    compressors); or pass it per call: ``chain.invoke(x, config={"callbacks": [SoftTokenGuard()]})``.

    Args:
        strict: Also reject text that only looks like a placeholder (by default only placeholders a ragzip store would
            resolve count, so a retrieved document cannot break the pipeline by quoting one).
    """

    raise_error = True  # LangChain swallows handler errors otherwise
    run_inline = True

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        if _is_ragzip_model(serialized, kwargs):
            return
        who = f"the LangChain LLM {_model_name(serialized, kwargs)}"
        for prompt in prompts:
            guard_prompt(prompt, who=who, strict=self.strict)

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]],
                            **kwargs: Any) -> None:
        if _is_ragzip_model(serialized, kwargs):
            return
        who = f"the LangChain chat model {_model_name(serialized, kwargs)}"
        for conversation in messages:
            for message in conversation:
                guard_prompt(message.text, who=who, strict=self.strict)


_guard_var: ContextVar[SoftTokenGuard | None] | None = None
_guard_lock = threading.Lock()


def install_soft_token_guard() -> ContextVar[SoftTokenGuard | None]:
    """Add a :class:`SoftTokenGuard` to every LangChain run in this process (idempotent).

    Uses LangChain's configure hooks (as its tracers do). Returns the context variable holding the guard: set it to
    ``None`` to switch the guard off in the current context, e.g. ``install_soft_token_guard().set(None)``.
    """
    global _guard_var
    with _guard_lock:
        if _guard_var is None:
            from langchain_core.tracers.context import register_configure_hook

            # The default is the guard itself, so every context sees it until one sets None.
            _guard_var = ContextVar("ragzip_soft_token_guard", default=SoftTokenGuard())  # noqa: B039
            register_configure_hook(_guard_var, inheritable=True)
            logger.info("installed ragzip's SoftTokenGuard: LLMs other than ragzip's now refuse soft-token prompts")
        return _guard_var


# ---------------------------------------------------------------------------------------------------------- LLMs
def _usage(generation: Any) -> dict[str, int]:
    prompt = int(getattr(generation, "prompt_positions", 0))
    new = int(getattr(generation, "new_tokens", 0))
    return {"input_tokens": prompt, "output_tokens": new, "total_tokens": prompt + new}


def _info(generation: Any) -> dict[str, Any]:
    return dataclasses.asdict(generation) if dataclasses.is_dataclass(generation) else {}


class _GeneratorModel:
    """Shared construction of ragzip's LangChain models (mixed into pydantic classes)."""

    _generator: Any

    @classmethod
    def from_yaml(cls, path: str | Path, *, store: SoftTokenStore | None = None, **kwargs: Any) -> Any:
        """Build from the ``generator:`` block of a ragzip YAML."""
        return cls(generator_from_yaml(path, store), **kwargs)  # type: ignore[call-arg]

    @property
    def generator(self) -> Any:
        """The wrapped :class:`ragzip.generation.HFGenerator`."""
        return self._generator

    @property
    def _identifying_params(self) -> dict[str, Any]:
        config = self._generator.config
        return {"model_name": config.model, "max_new_tokens": config.max_new_tokens, "stop": list(config.stop)}


class RagzipLLM(_GeneratorModel, LLM):
    """ragzip's local generator as a LangChain LLM (text in, text out); reads soft-token placeholders as vectors.

    Each prompt is sent as one user turn through the model's chat template (``use_chat_template=False``: decoded as
    raw text, and a batch of prompts is decoded together). Greedy; ``stop`` defaults to the config's stop strings.

    Args:
        generator: A :class:`ragzip.generation.HFGenerator`.
        config: Or its config (a ``GeneratorConfig`` or a dict).
        store: The soft-token store to read (with ``config``); the process-wide default when ``None``.

    Example:
        >>> llm = RagzipLLM(config={"model": "embedded:smollm2-135m"})  # doctest: +SKIP
        >>> llm.invoke("What is the capital of France?")  # doctest: +SKIP
        'Paris'
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    use_chat_template: bool = Field(
        default=True, description="Send each prompt as a user turn through the chat template (else raw text).")

    _generator: Any = PrivateAttr()

    def __init__(self, generator: Any = None, *, config: Any = None, store: SoftTokenStore | None = None,
                 **kwargs: Any) -> None:
        _check_kwargs(type(self), kwargs)
        built = resolve_generator(generator, config, store, who="RagzipLLM")
        super().__init__(**kwargs)
        self._generator = built
        track_store(built.store)

    @property
    def _llm_type(self) -> str:
        return "ragzip"

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None,
              **kwargs: Any) -> str:
        return self._run([prompt], stop, kwargs)[0].text

    def _run(self, prompts: list[str], stop: list[str] | None, kwargs: dict[str, Any]) -> list[Any]:
        options = generation_kwargs(kwargs, stop=stop, who="RagzipLLM")
        for prompt in prompts:
            check_reader_store(prompt, self._generator.store, who="RagzipLLM")
        with quiet_dependencies():
            if self.use_chat_template:
                return [self._generator.chat([{"role": "user", "content": p}], **options) for p in prompts]
            return self._generator.generate(prompts, **options)

    def _generate(self, prompts: list[str], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> LLMResult:
        generations = self._run(prompts, stop, kwargs)
        return LLMResult(generations=[[Generation(text=g.text, generation_info=_info(g))] for g in generations])

    async def _agenerate(self, prompts: list[str], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> LLMResult:
        return await asyncio.to_thread(self._generate, prompts, stop, None, **kwargs)


def _role(message: BaseMessage) -> str:
    kind = message.type
    if kind == "human":
        return "user"
    if kind == "ai":
        return "assistant"
    if kind == "chat":
        return str(getattr(message, "role", "user"))
    return kind if kind in ("system", "tool") else "user"


class RagzipChatModel(_GeneratorModel, BaseChatModel):
    """ragzip's local generator as a LangChain chat model; message contents may hold soft-token placeholders.

    Messages are rendered with the model's chat template (the config's system prompt is added when there is no system
    message). Greedy; ``stop`` defaults to the config's stop strings. ``usage_metadata`` counts prompt positions (a soft
    token is one) and generated tokens; ``response_metadata`` has the timings (``ttft_s``, ``total_s``).

    Args:
        generator: A :class:`ragzip.generation.HFGenerator`.
        config: Or its config (a ``GeneratorConfig`` or a dict).
        store: The soft-token store to read (with ``config``); the process-wide default when ``None``.

    Example:
        >>> chat = RagzipChatModel(config={"model": "embedded:smollm2-135m"})  # doctest: +SKIP
        >>> (prompt | chat | StrOutputParser()).invoke({"question": "..."})  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    _generator: Any = PrivateAttr()

    def __init__(self, generator: Any = None, *, config: Any = None, store: SoftTokenStore | None = None,
                 **kwargs: Any) -> None:
        _check_kwargs(type(self), kwargs)
        built = resolve_generator(generator, config, store, who="RagzipChatModel")
        super().__init__(**kwargs)
        self._generator = built
        track_store(built.store)

    @property
    def _llm_type(self) -> str:
        return "ragzip-chat"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        turns = [{"role": _role(m), "content": m.text} for m in messages]
        for turn in turns:
            check_reader_store(turn["content"], self._generator.store, who="RagzipChatModel")
        with quiet_dependencies():
            generation = self._generator.chat(turns, **generation_kwargs(kwargs, stop=stop, who="RagzipChatModel"))
        info = _info(generation)
        message = AIMessage(content=generation.text, response_metadata={"model_name": self._generator.config.model,
                                                                        **info},
                            usage_metadata=_usage(generation))
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)


# --------------------------------------------------------------------------------------------------- embeddings
class RagzipEmbeddings(Embeddings):
    """ragzip's embedder (``embedded:minilm`` by default) as LangChain embeddings.

    Args:
        embedder: A :class:`ragzip.embed.Embedder`.
        spec: Or the model to load: ``embedded:minilm``, a sentence-transformers HF id or a local path.

    Example:
        >>> emb = RagzipEmbeddings(spec="embedded:minilm")  # doctest: +SKIP
        >>> len(emb.embed_query("Who designed the Eiffel Tower?"))  # doctest: +SKIP
        384
    """

    def __init__(self, embedder: Any = None, *, spec: str | None = None) -> None:
        with quiet_dependencies():
            self.embedder = resolve_embedder(embedder, spec, who="RagzipEmbeddings")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with quiet_dependencies():
            return [list(map(float, row)) for row in self.embedder.encode(list(texts))]

    def embed_query(self, text: str) -> list[float]:
        import numpy as np

        with quiet_dependencies():
            return np.asarray(self.embedder.encode_query(text), dtype=np.float32).reshape(-1).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


# --------------------------------------------------------------------------------------------------- QA prompt
def qa_prompt(source: Any = None) -> ChatPromptTemplate:
    """ragzip's answer prompt as a LangChain ``ChatPromptTemplate`` over ``{context}`` and ``{question}``: the
    generator's system prompt and prompt template, the ones :class:`ragzip.RAGPipeline` uses (the small embedded
    reader answers best with the prompt it was tuned on).

    Args:
        source: A ragzip YAML path (its ``generator:`` block), a :class:`RagzipChatModel`/:class:`RagzipLLM`, a
            ``GeneratorConfig`` or a dict of its fields; ``None`` for the defaults.

    Example:
        >>> prompt = qa_prompt({"system_prompt": "Answer briefly."})
        >>> [m.content for m in prompt.format_messages(context="Paris is in France.", question="Where is Paris?")]
        ['Answer briefly.', 'Paris is in France.\\n\\nQuestion: Where is Paris?']
    """
    from ragzip.integrations._prompts import generator_config, qa_messages

    return ChatPromptTemplate.from_messages(qa_messages(generator_config(source), context="context",
                                                        question="question"))


def format_documents(documents: Sequence[Document]) -> str:
    """The context text ragzip's generator would read: the documents' texts, blank lines between them.

    Example:
        >>> format_documents([Document("Paris is in France."), Document("It rains.")])
        'Paris is in France.\\n\\nIt rains.'
    """
    return "\n\n".join(d.page_content for d in documents if d.page_content)
