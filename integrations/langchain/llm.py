"""ragzip's generator as a LangChain LLM and chat model; both read soft-token placeholders as vectors."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LLM, BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult, Generation, LLMResult
from pydantic import ConfigDict, Field, PrivateAttr

from ragzip.integrations._common import (
    check_kwargs,
    check_reader_store,
    generation_kwargs,
    generator_from_yaml,
    resolve_generator,
)
from ragzip.quiet import quiet_dependencies
from ragzip.softguard import track_store
from ragzip.softstore import SoftTokenStore

__all__ = ["RagzipChatModel", "RagzipLLM"]


def _usage(generation: Any) -> dict[str, int]:
    prompt = int(getattr(generation, "prompt_positions", 0))
    new = int(getattr(generation, "new_tokens", 0))
    return {"input_tokens": prompt, "output_tokens": new, "total_tokens": prompt + new}


def _info(generation: Any) -> dict[str, Any]:
    is_record = dataclasses.is_dataclass(generation) and not isinstance(generation, type)
    return dataclasses.asdict(generation) if is_record else {}


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
        check_kwargs(type(self), kwargs)
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
        check_kwargs(type(self), kwargs)
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
