"""The LlamaIndex callback handler that keeps soft-token placeholders away from LLMs that cannot read them."""

from __future__ import annotations

from typing import Any

from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler

from ragzip.softguard import guard_prompt

__all__ = ["RAGZIP_LLM_CLASS_NAMES", "SoftTokenGuard"]

RAGZIP_LLM_CLASS_NAMES = frozenset({"RagzipLLM"})
"""``class_name()`` of the LlamaIndex LLMs that read soft tokens (the guard lets their prompts through)."""


class SoftTokenGuard(BaseCallbackHandler):
    """Raises :class:`~ragzip.SoftTokenError` when live soft-token placeholders reach an LLM that cannot read them.

    Any LLM other than :class:`RagzipLLM` (a remote API) would read them as garbage text. :class:`RagzipPostprocessor`
    installs it on its callback manager when its output holds soft tokens (a query engine shares that manager with its
    LLM). Add it yourself elsewhere, e.g. ``Settings.callback_manager.add_handler(SoftTokenGuard())``.

    Args:
        strict: Also reject text that only looks like a placeholder (by default only placeholders a ragzip store would
            resolve count, so a retrieved document cannot break the pipeline by quoting one).

    Example:
        >>> from llama_index.core.callbacks import CallbackManager
        >>> manager = CallbackManager([])
        >>> SoftTokenGuard.install(manager) is SoftTokenGuard.install(manager)  # one guard per manager
        True
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
        """Check the prompt or messages of an LLM event before the LLM reads them; other events pass.

        Returns:
            ``event_id``, as LlamaIndex expects.

        Raises:
            SoftTokenError: the prompt holds live soft-token placeholders and the LLM is not a ragzip one.
        """
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
        """Nothing to check once an event ends: the guard acts before the LLM reads."""
        return None

    def start_trace(self, trace_id: str | None = None) -> None:
        """Nothing to do: the guard keeps no trace state."""
        return None

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        """Nothing to do: the guard keeps no trace state."""
        return None
