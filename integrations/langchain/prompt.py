"""ragzip's answer prompt as a LangChain ``ChatPromptTemplate``, and the context text the generator reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate

from ragzip.integrations._prompts import generator_config, qa_messages

__all__ = ["format_documents", "qa_prompt"]


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
    return ChatPromptTemplate.from_messages(qa_messages(generator_config(source), context="context",
                                                        question="question"))


def format_documents(documents: Sequence[Document]) -> str:
    """The context text ragzip's generator would read: the documents' texts, blank lines between them.

    Example:
        >>> format_documents([Document("Paris is in France."), Document("It rains.")])
        'Paris is in France.\\n\\nIt rains.'
    """
    return "\n\n".join(d.page_content for d in documents if d.page_content)
