"""The README's option tables are generated from the config help text; this keeps them from drifting."""

from __future__ import annotations

from pathlib import Path

from ragzip.docs import all_tables, sync

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_option_tables_match_the_configs():
    text = README.read_text(encoding="utf-8")
    assert sync(text, all_tables()) == text, "run `python -m ragzip.docs --write README.md`"


def test_every_registered_compressor_has_a_table_in_the_readme():
    text = README.read_text(encoding="utf-8")
    for name in all_tables():
        assert f"<!-- options:{name} -->" in text
