"""CONTRIBUTING.md's "adding a compressor" example runs as written (in a fresh interpreter: it registers a type)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def test_the_add_a_compressor_example_runs_as_written():
    code = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    assert len(code) == 1
    out = subprocess.run([sys.executable, "-c", code[0]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "Paris is in France"
