"""The LangChain callback handler that keeps soft-token placeholders away from LLMs that cannot read them."""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.tracers.context import register_configure_hook

from ragzip.softguard import guard_prompt

__all__ = ["RAGZIP_LLM_TYPES", "SoftTokenGuard", "install_soft_token_guard"]

logger = logging.getLogger(__name__)

RAGZIP_LLM_TYPES = frozenset({"ragzip", "ragzip-chat"})
"""``_llm_type`` of the LangChain models that read soft tokens (the guard lets their prompts through)."""


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
    """Raises :class:`~ragzip.SoftTokenError` when live soft-token placeholders reach a model that cannot read them.

    Any LLM or chat model other than ragzip's (a remote API) would read them as garbage text.

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
        """Check ``prompts`` before an LLM reads them; ragzip's own LLMs pass.

        Raises:
            SoftTokenError: a prompt holds live soft-token placeholders.
        """
        if _is_ragzip_model(serialized, kwargs):
            return
        who = f"the LangChain LLM {_model_name(serialized, kwargs)}"
        for prompt in prompts:
            guard_prompt(prompt, who=who, strict=self.strict)

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]],
                            **kwargs: Any) -> None:
        """Check every message of ``messages`` before a chat model reads them; ragzip's own chat models pass.

        Raises:
            SoftTokenError: a message holds live soft-token placeholders.
        """
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
            # The default is the guard itself, so every context sees it until one sets None.
            _guard_var = ContextVar("ragzip_soft_token_guard", default=SoftTokenGuard())  # noqa: B039
            register_configure_hook(_guard_var, inheritable=True)
            logger.info("installed ragzip's SoftTokenGuard: LLMs other than ragzip's now refuse soft-token prompts")
        return _guard_var
