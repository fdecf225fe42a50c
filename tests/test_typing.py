"""The typed public API: mypy passes on it ([tool.mypy] in pyproject.toml: the data types and errors, the framework-free
helpers the adapters use, and the LlamaIndex and LangChain adapters), and the helpers' public names are pinned.

``ragzip`` is assembled from three folders (``package-dir``), which mypy cannot map, so the test runs it over a tree
of links shaped like the installed package. The tree and mypy's cache live in ``.mypy_cache`` (ignored by git): a
first run reads the frameworks' types (about 20 s), later runs take a few seconds. Offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".mypy_cache"


def package_tree(root: Path) -> Path:
    """``root/ragzip``: links to every entry of ``core/``, plus ``plugins`` and ``integrations``; returns ``root``."""
    package = root / "ragzip"
    package.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in (REPO / "core").iterdir() if p.name != "__pycache__"}
    wanted.update(plugins=REPO / "plugins", integrations=REPO / "integrations")
    for link in package.iterdir():  # a module removed or renamed since the last run
        if link.is_symlink() and (link.name not in wanted or link.resolve() != wanted[link.name].resolve()):
            link.unlink()
    for name, target in wanted.items():
        if not (package / name).is_symlink():
            (package / name).symlink_to(target, target_is_directory=target.is_dir())
    return root


def test_public_api_type_checks() -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra: pip install -e '.[dev]'")
    pytest.importorskip("pydantic.mypy", reason="the adapters are checked with pydantic's mypy plugin")
    tree = package_tree(CACHE / "package-tree")
    env = {**os.environ, "MYPYPATH": str(tree)}
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(CACHE), "--no-error-summary"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_framework_free_helpers_pin_their_public_names() -> None:
    import ragzip.batching
    import ragzip.report
    import ragzip.softguard

    assert ragzip.batching.__all__ == ["AsyncBatcher"]
    assert ragzip.report.__all__ == ["NOT_INCLUDED", "SUMMARY_DECISION", "report", "summary_record"]
    assert ragzip.softguard.__all__ == ["guard_prompt", "live_placeholders", "track_store"]
