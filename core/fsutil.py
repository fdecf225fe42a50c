"""Filesystem helpers shared by everything that writes a folder readers may be using (indexes, caches, models).

Two ways to replace a folder's content while others read it:

* :func:`atomic_folder` swaps a whole folder (a cache, a converted model): the new copy is built beside it and renamed
  into place. The old one is renamed aside for the moment between the two renames; a crash in that moment is repaired
  by the next writer or reader (:func:`recover_folder` renames it back).
* :class:`VersionedFolder` keeps versions in subfolders and names the current one in a pointer file that is replaced
  atomically, so a reader always finds a complete version (used by saved indexes). Writers are serialised by a lock
  file; what a crashed writer left behind is removed by the next one. Only files ragzip wrote are ever deleted, and
  only inside a folder that carries ragzip's marker file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: an exclusive-create lock file
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

MARKER_FILE = ".ragzip"
"""Marks a folder that ragzip created and manages (JSON: ``{"kind": ..., "layout": 2}``)."""
POINTER_FILE = "CURRENT"
"""Names the current version subfolder of a :class:`VersionedFolder`."""
LOCK_FILE = ".lock"
_VERSION_RE = re.compile(r"v-\d{8}T\d{6}-\d{9}-[0-9a-f]{8}")  # sorts by time
_TMP_PREFIX = ".tmp-"
_OLD_RE = re.compile(r"\.(?P<name>.+)\.old-\d+-\d+")


# ------------------------------------------------------------------------------------------------- whole-folder swap
def recover_folder(target: Path) -> bool:
    """Undo a crash between the two renames of :func:`atomic_folder`: put the set-aside copy back. True if it did."""
    if target.exists() or not target.parent.is_dir():
        return False
    aside = sorted(p for p in target.parent.glob(f".{target.name}.old-*") if p.is_dir())
    if not aside:
        return False
    os.replace(aside[-1], target)
    logger.warning("recovered %s from %s, left by an interrupted save", target, aside[-1].name)
    return True


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; when the block succeeds, it replaces ``target``.

    A reader sees the old folder or the new one, never a half-written one: the old folder is renamed aside, the new one
    renamed into place, then the old one removed. If the block raises, ``target`` is untouched and the temporary
    folder is removed. A crash between the two renames is repaired by the next call (:func:`recover_folder`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None and not target.exists():
                os.replace(old, target)  # put the old copy back rather than leave it under a hidden name
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------------ locks
@contextmanager
def folder_lock(folder: Path, *, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) for the block; waits up to ``timeout_s``."""
    path = folder / LOCK_FILE
    deadline = time.monotonic() + timeout_s
    if fcntl is not None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"another process has held {path} for over {timeout_s:g} s") from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return
    while True:  # pragma: no cover - Windows
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} exists for over {timeout_s:g} s; remove it if no save is running") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        os.close(fd)
        os.unlink(path)


# ------------------------------------------------------------------------------------------------ versioned folders
def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a folder ragzip manages, or None (no marker, or not one ragzip wrote)."""
    try:
        data = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "kind" in data else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{secrets.token_hex(4)}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class VersionedFolder:
    """A folder whose content is replaced atomically for readers.

    It holds ``<root>/v-<time>-<id>/`` versions, a ``CURRENT`` pointer file naming the current one, a ``.ragzip``
    marker and a ``.lock`` file that serialises writers.

    Args:
        root: The folder.
        kind: What it holds (written into the marker, checked by :meth:`is_mine`).
        files: The names of the files a version holds: the only files ever deleted from an old version.
        keep: How many versions to keep (the current one and the previous, so a reader that has just read the
            pointer can still open its version).
    """

    def __init__(self, root: Path, kind: str, files: Iterable[str], *, keep: int = 2) -> None:
        self.root = root
        self.kind = kind
        self.files = frozenset(files)
        self.keep = max(1, keep)

    def is_mine(self) -> bool:
        """Whether ``root``'s ``.ragzip`` marker says it holds this ``kind``."""
        marker = read_marker(self.root)
        return marker is not None and marker.get("kind") == self.kind

    def current(self) -> Path | None:
        """The current version folder, or None when there is none yet."""
        try:
            name = (self.root / POINTER_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        if not _VERSION_RE.fullmatch(name):
            return None
        return self.root / name

    def versions(self) -> list[Path]:
        """The version folders present, oldest first (their names sort by time)."""
        return sorted(p for p in self.root.iterdir() if p.is_dir() and _VERSION_RE.fullmatch(p.name))

    def claimable(self, *, also: Callable[[Path], bool] | None = None) -> bool:
        """Whether a writer may take ``root``.

        It may when ``root`` is missing, empty (but for a lock file), already marked as this kind, or accepted by
        ``also`` (e.g. an earlier layout recognised by content).
        """
        if not self.root.exists():
            return True
        if not self.root.is_dir():
            return False
        others = {p.name for p in self.root.iterdir() if p.name != LOCK_FILE
                  and not p.name.startswith(f"{_TMP_PREFIX}{MARKER_FILE}-")}  # a writer is marking it right now
        if self.is_mine() or not others:
            return True
        return bool(also and also(self.root))

    @contextmanager
    def new_version(self, *, claim: Callable[[], None] | None = None) -> Iterator[Path]:
        """Yield an empty folder for the new version; when the block succeeds it becomes the current one.

        The folder is written under a temporary name, renamed to its version name, and only then named in the
        pointer file (replaced atomically). If the block raises, nothing changes for readers. ``claim`` runs with
        the lock held, before anything is written, and raises to refuse the folder.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.root):
            if claim is not None:
                claim()
            if read_marker(self.root) is None:
                _write_atomic(self.root / MARKER_FILE, json.dumps({"kind": self.kind, "layout": 2}) + "\n")
            self.cleanup()
            now = time.time_ns()
            name = (f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now // 10**9))}-{now % 10**9:09d}-"
                    f"{secrets.token_hex(4)}")
            tmp = self.root / f"{_TMP_PREFIX}{name}"
            tmp.mkdir()
            try:
                yield tmp
                _fsync_tree(tmp)
                _step_rename(tmp, self.root / name)
                _step_pointer(self.root, name)
            finally:
                if tmp.exists():
                    self._remove_version(tmp)
            self.cleanup()

    def cleanup(self) -> None:
        """Remove what interrupted writers left (temporary folders, pointer temp files) and versions beyond ``keep``.

        Call with the lock held (:meth:`new_version` does).
        """
        current = self.current()
        for path in self.root.iterdir():
            if path.name.startswith(_TMP_PREFIX):
                if path.is_dir():
                    self._remove_version(path)
                elif path.name.startswith(f"{_TMP_PREFIX}{POINTER_FILE}-") or \
                        path.name.startswith(f"{_TMP_PREFIX}{MARKER_FILE}-"):
                    path.unlink(missing_ok=True)
        versions = [v for v in self.versions() if v != current]
        # The newest others are kept up to keep-1 (the previous versions a reader may still be opening).
        for old in versions[:max(0, len(versions) - (self.keep - 1))] if current is not None else []:
            self._remove_version(old)

    def _remove_version(self, folder: Path) -> None:
        for path in folder.iterdir():
            if path.is_file() and (path.name in self.files or path.name.startswith(_TMP_PREFIX)):
                path.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            logger.warning("left %s in place: it holds files ragzip did not write (%s)", folder,
                           ", ".join(sorted(p.name for p in folder.iterdir())[:5]))


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


# The steps of a swap, separate so tests can inject a crash between them.
def _step_rename(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _step_pointer(root: Path, name: str) -> None:
    _write_atomic(root / POINTER_FILE, name + "\n")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
