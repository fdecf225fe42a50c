"""The public API keeps its docstrings: ruff's pydocstyle rules (``D``, Google convention) pass on the paths they cover.

Which paths those are is set in pyproject.toml (``[tool.ruff.lint.per-file-ignores]``); the second test pins that
choice, so a config edit cannot quietly stop checking a public module. Skipped when ruff is not installed (it is in
the dev extra). Offline, about a second.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNDOCUMENTED = "def f():\n    pass\n"


def ruff(*args: str, stdin: str | None = None) -> str:
    """Run ``ruff check`` with the repository's config from its root; return the docstring (D) findings."""
    pytest.importorskip("ruff", reason="ruff is in the dev extra: pip install -e '.[dev]'")
    # The config's own rule set, not `--select D`: a selection on the command line drops the config's `ignore`.
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "--no-cache", *args],
                            cwd=REPO, input=stdin, capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    return "\n".join(line for line in result.stdout.splitlines() if re.search(r": D\d{3} ", line))


def test_public_api_has_google_style_docstrings() -> None:
    findings = ruff("core", "plugins", "integrations")
    assert not findings, findings[-6000:]


@pytest.mark.parametrize(("path", "covered"), [
    ("core/compressor.py", True),
    ("core/bench/runner.py", True),
    ("core/training/trainer.py", True),
    ("integrations/llamaindex/postprocessor.py", True),
    ("integrations/langchain/compressor.py", True),
    ("integrations/langchain/llm.py", True),
    ("plugins/xrag/compressor.py", True),
    ("plugins/refrag/config.py", True),
    ("core/_lazy.py", False),
    ("integrations/_common.py", False),
    ("plugins/refrag/train.py", False),
    ("plugins/extractive/evaluate.py", False),
    ("plugins/xrag/modeling.py", False),
    ("tests/core/test_core.py", False),
    ("benchmarks/summary.py", False),
])
def test_docstring_rules_cover_the_public_api_only(path: str, covered: bool) -> None:
    findings = ruff("--stdin-filename", path, "-", stdin=UNDOCUMENTED)
    assert ("D103" in findings) == covered, f"{path}: expected the D rules {'on' if covered else 'off'}\n{findings}"
