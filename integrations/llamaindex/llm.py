"""ragzip's generator as a LlamaIndex LLM that reads soft-token placeholders.

:class:`RagzipLLM` also gives the prompt helper that sizes prompts as the generator reads them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.indices.prompt_helper import PromptHelper
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.node_parser import TokenTextSplitter

from ragzip._lazy import require
from ragzip.errors import SoftTokenError
from ragzip.integrations._common import check_reader_store, generation_kwargs, generator_from_yaml, resolve_generator
from ragzip.models import resolve
from ragzip.quiet import quiet_dependencies
from ragzip.softguard import track_store
from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore, has_placeholder, split_prompt

__all__ = ["RagzipLLM"]


def _message_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
        if role in (MessageRole.CHATBOT.value, MessageRole.MODEL.value):
            role = "assistant"
        out.append({"role": role, "content": m.content or ""})
    return out


def _context_length(generator: Any) -> int:
    """The generator's context length: its tokenizer's limit, else the model config's, else 2048.

    The model config is read without loading the weights when the model is a resolvable spec.
    """
    length = getattr(generator.tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < 1_000_000:
        return length
    positions = None
    try:
        auto_config = require("transformers").AutoConfig  # lazy: the adapters load no transformers until they run
        positions = getattr(auto_config.from_pretrained(resolve(generator.config.model)), "max_position_embeddings",
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
    is_record = dataclasses.is_dataclass(generation) and not isinstance(generation, type)
    return dataclasses.asdict(generation) if is_record else {"text": str(generation)}


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
        """The name LlamaIndex serializes this component under."""
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
        """What LlamaIndex sizes prompts by: the context window, the answer length, and that this is a chat model.

        ``context_window`` is the field when set, else the model's context length; ``num_output`` the field when set,
        else the generator's ``max_new_tokens``.
        """
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
        """``text`` as the generator reads it, one entry per input position.

        Text becomes its token ids; each live soft-token placeholder becomes one ``-1`` per vector it stands for.
        LlamaIndex counts with ``len(tokenizer(text))``, so this is the tokenizer to size prompts with.

        Args:
            text: A prompt, possibly holding soft-token placeholders.

        Returns:
            One entry per position the generator reads.
        """
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
        """Answer ``prompt``, read as one user turn in the model's chat template.

        Args:
            prompt: The prompt; its soft-token placeholders are read as vectors.
            formatted: ``True`` decodes ``prompt`` as raw text, without the chat template.
            **kwargs: ``max_new_tokens`` (or ``max_tokens``) and ``stop``; other options are ignored (decoding is
                greedy).

        Returns:
            The answer, with the generation record in ``raw``.

        Raises:
            SoftTokenError: a placeholder was issued by another store, or was already read (LlamaIndex sent it twice).
        """
        return self._complete(prompt, formatted, kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """:meth:`complete`, yielding the whole answer as one chunk."""
        response = self._complete(prompt, formatted, kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text, raw=response.raw)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """:meth:`complete` in a worker thread, so the event loop is not blocked while the model decodes."""
        return await asyncio.to_thread(self._complete, prompt, formatted, kwargs)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer the conversation, rendered with the model's chat template.

        Args:
            messages: The turns; ``chatbot`` and ``model`` roles are read as ``assistant``, and soft-token
                placeholders in their content as vectors.
            **kwargs: ``max_new_tokens`` (or ``max_tokens``) and ``stop``; other options are ignored (decoding is
                greedy).

        Returns:
            The assistant's message, with the generation record in ``raw``.

        Raises:
            SoftTokenError: a placeholder was issued by another store, or was already read (LlamaIndex sent it twice).
        """
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """:meth:`chat`, yielding the whole answer as one chunk."""
        response = self._chat(messages, kwargs)

        def gen() -> ChatResponseGen:
            yield ChatResponse(message=response.message, delta=response.message.content, raw=response.raw)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """:meth:`chat` in a worker thread, so the event loop is not blocked while the model decodes."""
        return await asyncio.to_thread(self._chat, messages, kwargs)
