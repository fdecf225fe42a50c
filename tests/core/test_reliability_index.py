"""Saving an index never destroys what ragzip did not write, and the swap is atomic.

The failures ruled out: a save that replaces any folder holding a file named ``meta.json`` (and the user's other files
with it), a re-index that wipes the REFRAG chunk cache inside the index folder, and a swap by two renames, where a
reader can find no index, two saves race into a raw OSError, and a crash between the renames leaves the index hidden.
"""

from __future__ import annotations

import json
import re
import shutil
import threading

import pytest

from ragzip import InputError, Passage, fsutil
from ragzip.embed import Embedder
from ragzip.retrieval import FaissRetriever, index_files, is_saved_index

DOCS = [Passage(f"Document {i} about topic {i}.", id=f"d{i}") for i in range(6)]


@pytest.fixture(scope="module")
def embedder():
    return Embedder("hash:32")


def build(embedder, n: int) -> FaissRetriever:
    return FaissRetriever.build(DOCS[:n], embedder)


def test_folder_with_someone_elses_meta_json_is_refused_and_untouched(tmp_path, embedder) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "meta.json").write_text('{"name": "my project"}')
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=re.escape(f"cannot save the index to {str(folder)!r}: it exists and is not "
                                                   "a ragzip index folder.")):
        build(embedder, 2).save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"


def test_reindex_keeps_the_refrag_cache_and_the_users_files(tmp_path, embedder) -> None:
    index = tmp_path / "index"
    build(embedder, 2).save(index)
    cache = index / "refrag-embedded-minilm-k16"
    cache.mkdir()
    (cache / "meta.json").write_text('{"format": "ragzip-refrag-chunk-cache"}')
    (index / "README.txt").write_text("mine")
    build(embedder, 4).save(index)  # re-index
    assert (cache / "meta.json").is_file() and (index / "README.txt").read_text() == "mine"
    assert len(FaissRetriever.load(index)) == 4 and is_saved_index(index)


def test_index_saved_by_an_earlier_ragzip_loads_and_is_migrated_in_place(tmp_path, embedder) -> None:
    new = tmp_path / "new"
    build(embedder, 3).save(new)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for f in index_files(new).iterdir():  # the earlier layout: the three files at the top level
        shutil.copy(f, legacy / f.name)
    (legacy / "mine.txt").write_text("keep")
    assert is_saved_index(legacy) and len(FaissRetriever.load(legacy)) == 3
    build(embedder, 5).save(legacy)
    assert len(FaissRetriever.load(legacy)) == 5
    assert (legacy / "mine.txt").read_text() == "keep" and not (legacy / "index.faiss").exists()


def test_reader_looping_during_saves_never_fails(tmp_path, embedder) -> None:
    index = tmp_path / "index"
    build(embedder, 2).save(index)
    stop = threading.Event()
    seen: set[int] = set()
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(len(FaissRetriever.load(index, embedder=embedder)))
            except BaseException as err:  # noqa: BLE001 - surfaced below
                errors.append(err)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            build(embedder, 2 + i % 3).save(index)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors[:1]
    assert seen <= {2, 3, 4} and seen


def test_two_concurrent_writers_both_succeed_and_leave_no_orphans(tmp_path, embedder) -> None:
    index = tmp_path / "index"
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for _ in range(8):
                build(embedder, n).save(index)
        except BaseException as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (2, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:1]
    assert len(FaissRetriever.load(index)) in (2, 5)
    names = sorted(p.name for p in index.iterdir())
    assert not [n for n in names if n.startswith(".tmp-")]
    assert len([n for n in names if n.startswith("v-")]) <= 2  # the current version and the previous one


@pytest.mark.parametrize("step", ["_step_rename", "_step_pointer"])
def test_crash_between_steps_keeps_the_old_index_and_the_next_save_cleans_up(tmp_path, embedder, monkeypatch,
                                                                             step) -> None:
    index = tmp_path / "index"
    build(embedder, 2).save(index)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(fsutil, step, crash)
    with pytest.raises(KeyboardInterrupt):
        build(embedder, 4).save(index)
    monkeypatch.undo()
    assert len(FaissRetriever.load(index)) == 2  # readers still see the old, complete index
    build(embedder, 3).save(index)
    assert len(FaissRetriever.load(index)) == 3
    names = sorted(p.name for p in index.iterdir())
    assert not [n for n in names if n.startswith(".tmp-")] and len([n for n in names if n.startswith("v-")]) <= 2


def test_crash_that_leaves_a_half_written_version_behind_is_cleaned(tmp_path, embedder) -> None:
    index = tmp_path / "index"
    build(embedder, 2).save(index)
    orphan = index / ".tmp-v-20260101T000000-000000000-deadbeef"  # a writer killed mid-write
    orphan.mkdir()
    (orphan / "index.faiss").write_bytes(b"half")
    (index / ".tmp-CURRENT-0000").write_text("v-garbage")
    assert len(FaissRetriever.load(index)) == 2
    build(embedder, 3).save(index)
    assert not orphan.exists() and not (index / ".tmp-CURRENT-0000").exists()


def test_atomic_folder_recovers_a_copy_left_aside_by_a_crash(tmp_path, monkeypatch) -> None:
    target = tmp_path / "cache"
    with fsutil.atomic_folder(target) as tmp:
        (tmp / "data").write_text("v1")
    aside = tmp_path / ".cache.old-1-1"
    target.rename(aside)  # what a crash between the two renames leaves
    assert fsutil.recover_folder(target) and (target / "data").read_text() == "v1" and not aside.exists()
    real = fsutil.os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", flaky)
    with pytest.raises(OSError, match="disk full"):
        with fsutil.atomic_folder(target) as tmp:
            (tmp / "data").write_text("v2")
    monkeypatch.undo()
    assert (target / "data").read_text() == "v1"  # put back, not left under a hidden name
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_marker_is_json_ragzip_wrote(tmp_path, embedder) -> None:
    index = tmp_path / "index"
    build(embedder, 2).save(index)
    assert json.loads((index / ".ragzip").read_text()) == {"kind": "faiss-index", "layout": 2}
