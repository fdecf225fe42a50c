"""ragzip's answer prompt for the frameworks (framework-free): the generator's system prompt and prompt template,
rewritten with the host framework's slot names, so a LlamaIndex or LangChain app asks the reader exactly as
:class:`ragzip.RAGPipeline` does."""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragzip.config import load_config
from ragzip.config_utils import from_dict
from ragzip.errors import ConfigError
from ragzip.generation import GeneratorConfig


def generator_config(source: Any = None) -> GeneratorConfig:
    """The :class:`GeneratorConfig` of a YAML path, a ragzip LLM wrapper or generator, a config, a dict, or None."""
    if source is None:
        return GeneratorConfig()
    if isinstance(source, GeneratorConfig):
        return source
    if isinstance(source, (str, Path)):
        return load_config(source).generator
    if isinstance(source, Mapping):
        return from_dict(GeneratorConfig, dict(source), where="generator")
    generator = getattr(source, "generator", source)
    config = getattr(generator, "config", None)
    if isinstance(config, GeneratorConfig):
        return config
    raise ConfigError(f"qa_prompt() takes a ragzip YAML path, a ragzip LLM, a GeneratorConfig or a dict of its fields, "
                      f"got {type(source).__name__}.")


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def qa_messages(config: GeneratorConfig, *, context: str, question: str, escape: bool = True) -> list[tuple[str, str]]:
    """``[(role, template), ...]``: the system prompt (when set) and the user template, its ``{context}`` and
    ``{question}`` slots renamed to ``context``/``question``. Literal braces are escaped for ``str.format``
    (LangChain) or, with ``escape=False``, left as they are (LlamaIndex formats only the slots it knows)."""
    names = {"context": context, "question": question}
    quote = _escape if escape else (lambda text: text)
    user = ""
    for literal, field, _, _ in string.Formatter().parse(config.prompt_template):
        user += quote(literal)
        if field is not None:
            user += "{" + names[field] + "}"
    messages = [("system", quote(config.system_prompt))] if config.system_prompt else []
    return [*messages, ("user", user)]
