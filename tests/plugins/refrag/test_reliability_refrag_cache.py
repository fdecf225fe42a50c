"""The REFRAG chunk cache is checksummed like the FAISS index; damage is a clear error.

Unchecked, overwritten rows would be used silently, a truncated file would give a raw ``ValueError`` and a broken
``meta.json`` a raw ``JSONDecodeError``.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

from ragzip.errors import IndexCorruptError
from ragzip.plugins.refrag.cache import (
    KEYS_FILE,
    META_FILE,
    VECTORS_FILE,
    CacheCorruptError,
    CacheSpec,
    ChunkCache,
    write_cache,
)

SPEC = CacheSpec(encoder="tiny", fingerprint="f" * 16, k=8, tokenizer="tok", dim=4)
KEYS = [f"{i:032x}" for i in range(5)]


@pytest.fixture()
def cache(tmp_path):
    folder = tmp_path / "refrag-tiny-k8"
    write_cache(folder, KEYS, np.arange(20, dtype=np.float32).reshape(5, 4), SPEC.as_meta())
    return folder


def message(folder) -> str:
    return f"REFRAG chunk cache {str(folder)!r}"


def test_intact_cache_loads(cache) -> None:
    loaded = ChunkCache.open(cache, SPEC)
    assert len(loaded) == 5 and np.array_equal(loaded.lookup([KEYS[1]])[0], [4, 5, 6, 7])
    assert set(json.loads((cache / META_FILE).read_text())["files"]) == {KEYS_FILE, VECTORS_FILE}


def test_overwritten_rows_are_detected(cache) -> None:
    data = bytearray((cache / VECTORS_FILE).read_bytes())
    data[-8:] = b"\x00" * 8  # the same size, another last row
    (cache / VECTORS_FILE).write_bytes(bytes(data))
    with pytest.raises(CacheCorruptError, match=re.escape(f"{message(cache)}: {VECTORS_FILE} is corrupted: its "
                                                          "sha256")) as err:
        ChunkCache.open(cache, SPEC)
    assert "was truncated or overwritten. Rebuild it with `ragzip index --refrag`" in str(err.value)
    assert isinstance(err.value, IndexCorruptError)


def test_truncated_file_is_a_clear_error(cache) -> None:
    data = (cache / KEYS_FILE).read_bytes()
    (cache / KEYS_FILE).write_bytes(data[:len(data) // 2])
    with pytest.raises(CacheCorruptError, match=re.escape(f"{message(cache)}: {KEYS_FILE} is corrupted")):
        ChunkCache.open(cache, SPEC)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_broken_meta_json_is_a_clear_error(cache, text) -> None:
    (cache / META_FILE).write_text(text)
    with pytest.raises(CacheCorruptError, match=re.escape(f"{message(cache)}: {META_FILE} is unreadable")) as err:
        ChunkCache.open(cache, SPEC)
    assert "Rebuild it with `ragzip index --refrag`" in str(err.value)


def test_cache_without_checksums_from_an_earlier_ragzip_still_loads_with_a_warning(cache, caplog) -> None:
    meta = json.loads((cache / META_FILE).read_text())
    del meta["files"]
    meta["format_version"] = 1
    (cache / META_FILE).write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="ragzip.plugins.refrag.cache"):
        assert len(ChunkCache.open(cache, SPEC)) == 5
    assert "has no checksums (written by an earlier ragzip)" in caplog.text
    (cache / VECTORS_FILE).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CacheCorruptError, match=re.escape(f"{message(cache)}: its arrays are unreadable")):
        ChunkCache.open(cache, SPEC)
