"""Every Python and YAML block of the README runs as written.

Fast tests (no models): every YAML block is a valid ragzip config, every Python block compiles, and every name it
imports from ragzip (or reads as ``ragzip.<name>``) exists. The slow test runs the whole README in order in a fresh
folder, offline, on the embedded models: the ``ragzip ...`` lines of its ``bash`` blocks, the YAML blocks that name
a file (``# file: ragzip.yaml``) written there, and every Python block in a namespace of its own -- and checks that
nothing fails and that no dependency warning or progress bar reaches the output.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import ragzip
from ragzip.config import parse_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
FILE_MARK = re.compile(r"^# file: (\S+)\n")
FRAMEWORKS = ("llama_index", "langchain", "langchain_core", "langchain_classic", "langchain_community")


def blocks(lang: str | None = None) -> list[tuple[str, str]]:
    """``(lang, code)`` of every fenced block of the README, in order (only ``lang`` when given)."""
    found = [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text(encoding="utf-8"))]
    return [b for b in found if lang is None or b[0] == lang]


def python_blocks() -> list[str]:
    return [code for _, code in blocks("python")]


def test_readme_has_the_blocks_the_quick_start_needs():
    assert len(python_blocks()) >= 5
    assert any(FILE_MARK.match(code) for _, code in blocks("yaml"))
    commands = [line for _, code in blocks("bash") for line in code.splitlines() if line.startswith("ragzip ")]
    assert any(c.startswith("ragzip index") for c in commands) and any(c.startswith("ragzip ask") for c in commands)


@pytest.mark.parametrize("index", range(len(blocks("yaml"))))
def test_every_yaml_block_is_a_valid_config(index):
    code = blocks("yaml")[index][1]
    documents = list(yaml.safe_load_all(code))
    assert documents
    for doc in documents:
        parse_config(doc, source=f"README yaml block {index}")  # unknown keys and types raise ConfigError


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_python_block_compiles_and_its_names_exist(index):
    code = python_blocks()[index]
    tree = ast.parse(code, filename=f"README python block {index}")
    for module, names in _imports(tree):
        if module.split(".")[0] in FRAMEWORKS and importlib.util.find_spec(module.split(".")[0]) is None:
            continue  # that framework's extra is not installed here
        imported = importlib.import_module(module)
        for name in names:
            assert hasattr(imported, name), f"README python block {index}: `from {module} import {name}` fails"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ragzip":
            assert node.attr in ragzip.__all__, f"README python block {index}: ragzip.{node.attr} is not public"


# ---------------------------------------------------------------------------------------------- the whole README
DRIVER = textwrap.dedent("""
    import json, os, shlex, subprocess, sys, traceback
    import torch
    torch.set_num_threads(1)

    steps = json.load(open(sys.argv[1], encoding="utf-8"))
    for n, step in enumerate(steps):
        print(f"=== step {n}: {step['kind']}", flush=True)
        if step["kind"] == "file":
            open(step["name"], "w", encoding="utf-8").write(step["text"])
        elif step["kind"] == "bash":
            args = shlex.split(step["text"])
            done = subprocess.run([sys.executable, "-m", "ragzip", *args[1:]], capture_output=True, text=True)
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            if done.returncode:
                print(f"=== FAILED step {n}: {step['text']} (exit {done.returncode})", flush=True)
                sys.exit(1)
        else:
            try:
                exec(compile(step["text"], f"README python block (step {n})", "exec"), {"__name__": "__main__"})
            except Exception:
                traceback.print_exc()
                print(f"=== FAILED step {n}", flush=True)
                sys.exit(1)
        sys.stdout.flush()
    print("=== all README steps passed")
""")


def readme_steps() -> list[dict[str, str]]:
    steps: list[dict[str, str]] = []
    for lang, code in blocks():
        if lang == "bash":
            steps.extend({"kind": "bash", "text": line} for line in code.splitlines() if line.startswith("ragzip "))
        elif lang == "yaml" and FILE_MARK.match(code):
            steps.append({"kind": "file", "name": FILE_MARK.match(code).group(1), "text": code})
        elif lang == "python":
            steps.append({"kind": "python", "text": code})
    return steps


@pytest.mark.slow
def test_the_readme_runs_as_written_offline(tmp_path):
    pytest.importorskip("llama_index.core")
    pytest.importorskip("langchain_classic")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    (tmp_path / "steps.json").write_text(json.dumps(readme_steps()), encoding="utf-8")
    (tmp_path / "driver.py").write_text(DRIVER, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("RAGZIP_VERBOSE", None)
    done = subprocess.run([sys.executable, "driver.py", "steps.json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1800)
    out = done.stdout + done.stderr
    print(done.stdout)  # `pytest -m slow -rP tests/test_readme.py` shows what the README prints
    assert done.returncode == 0, out[-6000:]
    assert "=== all README steps passed" in done.stdout
    # Quiet: nothing from the libraries underneath (warnings, "Loading weights" progress bars).
    assert "Warning" not in done.stderr and "Loading weights" not in out, done.stderr[-3000:]
    assert "I don't know." in done.stdout  # the "not in my documents" recipe declines the unanswerable question
