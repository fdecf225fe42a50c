"""ragzip's answer prompt as a LlamaIndex ``text_qa_template``."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.prompts import ChatPromptTemplate

from ragzip.integrations._prompts import generator_config, qa_messages

__all__ = ["qa_prompt"]


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
    messages = qa_messages(generator_config(source), context="context_str", question="query_str", escape=False)
    return ChatPromptTemplate([ChatMessage(role=MessageRole(role), content=text) for role, text in messages])
