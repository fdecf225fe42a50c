"""The three top-level folders install under the one import name `ragzip`, from a wheel and editable."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMPORT_ALL = "import ragzip, ragzip.plugins, ragzip.integrations; print(ragzip.__file__)"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True)
    (whl,) = out.glob("ragzip-*.whl")
    return whl


def test_wheel_maps_folders_under_ragzip(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"ragzip", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "ragzip/plugins/__init__.py" in names and "ragzip/integrations/__init__.py" in names
    assert "ragzip/plugins/baseline/__init__.py" in names
    assert "ragzip/py.typed" in names
    assert not any(n.startswith(("core/", "plugins/", "integrations/")) for n in names)


def test_wheel_installs_and_imports_in_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
                   check=True, capture_output=True)
    # Reuse this environment's dependencies (torch, numpy, ...) through PYTHONPATH; its .pth files (the editable
    # install's finder) are not processed for PYTHONPATH entries, so `ragzip` must come from the wheel.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    out = subprocess.run([py, "-c", IMPORT_ALL], check=True, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.stdout.strip().startswith(site)
    for bare in ("core", "plugins", "integrations"):
        assert not (Path(site) / bare).exists()
        probe = subprocess.run([py, "-c", f"import {bare}"], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert probe.returncode != 0


def test_editable_install_imports_from_the_work_tree(tmp_path):
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert Path(out.stdout.strip()).parent == REPO / "core"
    for bare in ("core", "plugins", "integrations"):
        probe = subprocess.run([sys.executable, "-c", f"import {bare}"], capture_output=True, cwd=tmp_path)
        assert probe.returncode != 0, f"a bare `{bare}` module is importable"
