"""README option tables generated from the config dataclasses' help text, so the docs cannot drift.

``python -m ragzip.docs`` prints the tables; ``python -m ragzip.docs --write README.md`` rewrites the blocks between
``<!-- options:NAME -->`` and ``<!-- /options:NAME -->`` markers; a test checks the README is in sync.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

from ragzip.compressor import get_compressor_class, registered_compressors
from ragzip.generation import GeneratorConfig
from ragzip.retrieval import RetrieverConfig


def options_table(config_class: type) -> str:
    """The Markdown table of ``config_class``'s options: name, default and the field's ``help`` text.

    Example:
        >>> from dataclasses import dataclass, field
        >>> @dataclass
        ... class Demo:
        ...     k: int = field(default=3, metadata={"help": "Passages kept."})
        >>> print(options_table(Demo))
        | option | default | what it does |
        |---|---|---|
        | `k` | `3` | Passages kept. |
    """
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for f in dataclasses.fields(config_class):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        shown = repr(default).replace("|", "\\|").replace("\n", "\\n")
        helptext = str(f.metadata.get("help", "")).replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{shown}` | {helptext} |")
    return "\n".join(rows)


def all_tables() -> dict[str, str]:
    """Every option table the README holds: one per registered compressor type, plus ``retriever`` and ``generator``."""
    tables = {name: options_table(get_compressor_class(name).config_class) for name in registered_compressors()}
    tables["retriever"] = options_table(RetrieverConfig)
    tables["generator"] = options_table(GeneratorConfig)
    return tables


def sync(text: str, tables: dict[str, str]) -> str:
    """``text`` with the block between ``<!-- options:NAME -->`` and ``<!-- /options:NAME -->`` set to ``tables[NAME]``.

    Blocks whose name is not in ``tables`` are left as they are.
    """

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in tables:
            return match.group(0)
        return f"<!-- options:{name} -->\n{tables[name]}\n<!-- /options:{name} -->"

    return re.sub(r"<!-- options:([\w-]+) -->.*?<!-- /options:\1 -->", fill, text, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    """Print the option tables, or with ``--write FILE`` rewrite that Markdown file's option blocks; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m ragzip.docs")
    parser.add_argument("--write", metavar="README", help="rewrite the option blocks of this Markdown file")
    args = parser.parse_args(argv)
    tables = all_tables()
    if args.write:
        path = Path(args.write)
        path.write_text(sync(path.read_text(encoding="utf-8"), tables), encoding="utf-8")
    else:
        for name, table in tables.items():
            print(f"### {name}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
