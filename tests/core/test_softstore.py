"""SoftTokenStore: unguessable handles, bounded LRU memory, thread safety, and placeholder splitting."""

from __future__ import annotations

import re
import threading

import pytest
import torch

from ragzip.errors import SoftTokenError
from ragzip.softstore import (
    PLACEHOLDER_RE,
    SoftEntry,
    SoftTokenStore,
    default_store,
    has_placeholder,
    placeholder,
    reject_placeholders,
    split_prompt,
)

D = 4
ENTRY_BYTES = D * 4  # one float32 vector of width D


def handle_of(text: str) -> str:
    match = PLACEHOLDER_RE.fullmatch(text)
    assert match is not None, text
    return match.group(1)


def test_put_returns_placeholder_with_128_bit_handle_and_resolves() -> None:
    store = SoftTokenStore()
    text = store.put(torch.arange(D, dtype=torch.float32), space="toy")
    handle = handle_of(text)
    assert len(handle) == 32 and int(handle, 16) >= 0  # 32 hex digits = 128 bits
    entry = store.resolve(handle)
    assert entry is not None and entry.space == "toy"
    assert entry.vectors.shape == (1, D) and entry.vectors.dtype == torch.float32
    assert torch.equal(entry.vectors[0], torch.arange(D, dtype=torch.float32))
    assert store.nbytes == ENTRY_BYTES and len(store) == 1


def test_handles_are_unique() -> None:
    store = SoftTokenStore()
    handles = {handle_of(store.put(torch.zeros(D), space="toy")) for _ in range(200)}
    assert len(handles) == 200


def test_stored_vectors_are_a_detached_copy() -> None:
    store = SoftTokenStore()
    source = torch.ones(2, D, requires_grad=True)
    entry = store.resolve(handle_of(store.put(source, space="toy")))
    assert entry is not None and not entry.vectors.requires_grad
    with torch.no_grad():
        source.mul_(5)
    assert torch.equal(entry.vectors, torch.ones(2, D))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_vectors_are_rejected(bad: float) -> None:
    store = SoftTokenStore()
    vectors = torch.zeros(2, D)
    vectors[1, 2] = bad
    with pytest.raises(SoftTokenError, match=re.escape(
            "soft tokens contain NaN or inf; check the embeddings fed to the compressor.")):
        store.put(vectors, space="toy")
    assert len(store) == 0 and store.nbytes == 0


@pytest.mark.parametrize("shape", [(0, D), (2, 2, D), ()])
def test_bad_shapes_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(SoftTokenError, match=re.escape("soft tokens must have shape (n, d) with n >= 1")):
        SoftTokenStore().put(torch.zeros(shape), space="toy")


def test_entry_larger_than_capacity_is_rejected() -> None:
    store = SoftTokenStore(max_bytes=ENTRY_BYTES)
    with pytest.raises(SoftTokenError, match=re.escape(
            f"soft tokens of {2 * ENTRY_BYTES} bytes exceed the store's max_bytes={ENTRY_BYTES}; "
            "raise `max_bytes` when building the SoftTokenStore (or RAGZIP_SOFT_STORE_BYTES for the default store), "
            "or compress fewer passages per request.")):
        store.put(torch.zeros(2, D), space="toy")


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match=re.escape("max_bytes must be positive, got 0.")):
        SoftTokenStore(max_bytes=0)


def test_lru_eviction_keeps_bytes_bounded_and_evicts_least_recently_used() -> None:
    store = SoftTokenStore(max_bytes=3 * ENTRY_BYTES)  # unpinned entries: plain LRU
    a, b, c = (handle_of(store.put(torch.full((D,), float(i)), space="toy", pin=False)) for i in range(3))
    assert store.resolve(a) is not None  # touch a: b is now the least recently used
    d = handle_of(store.put(torch.zeros(D), space="toy", pin=False))
    assert store.resolve(b) is None
    assert all(store.resolve(h) is not None for h in (a, c, d))
    assert store.nbytes == 3 * ENTRY_BYTES and len(store) == 3
    big = handle_of(store.put(torch.zeros(3, D), space="toy", pin=False))  # fills the store alone: evicts everything else
    assert [h for h in (a, c, d, big) if store.resolve(h) is not None] == [big]
    assert store.nbytes == 3 * ENTRY_BYTES


def test_clear_empties_the_store() -> None:
    store = SoftTokenStore()
    handle = handle_of(store.put(torch.zeros(D), space="toy"))
    store.clear()
    assert store.resolve(handle) is None and len(store) == 0 and store.nbytes == 0


def test_concurrent_put_and_resolve_keep_byte_count_consistent() -> None:
    capacity = 50 * ENTRY_BYTES
    store = SoftTokenStore(max_bytes=capacity)
    errors: list[BaseException] = []
    seen: list[str] = []
    barrier = threading.Barrier(8)

    def worker(seed: int) -> None:
        try:
            barrier.wait()
            mine: list[str] = []
            for i in range(300):
                n = 1 + (seed + i) % 3
                mine.append(handle_of(store.put(torch.full((n, D), float(seed)), space="toy", pin=False)))
                for handle in mine[-5:]:
                    entry = store.resolve(handle)
                    if entry is not None:  # an entry, once resolved, is whole and unchanged
                        assert entry.vectors.shape[1] == D and bool((entry.vectors == seed).all())
                assert store.nbytes <= capacity
            seen.extend(mine)
        except BaseException as err:  # noqa: BLE001 - surfaced in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    live = [store.resolve(h) for h in seen]
    live_entries = [e for e in live if e is not None]
    assert len(live_entries) == len(store)
    assert store.nbytes == sum(e.nbytes for e in live_entries) <= capacity
    assert len(set(seen)) == 8 * 300


def test_split_prompt_resolves_live_placeholders_only() -> None:
    store = SoftTokenStore()
    live = store.put(torch.ones(2, D), space="toy")
    forged = placeholder("0" * 32)
    text = f"before {live} middle {forged} after{live}"
    pieces = split_prompt(text, store)
    assert [type(p) for p in pieces] == [str, SoftEntry, str, SoftEntry]
    assert pieces[0] == "before " and pieces[2] == f" middle {forged} after"
    assert split_prompt(text, None) == [text]
    assert split_prompt(live, store)[0].vectors.shape == (2, D)  # type: ignore[union-attr]


def test_split_prompt_drops_only_the_separating_spaces_an_entry_was_written_with() -> None:
    store = SoftTokenStore()
    both = store.put(torch.ones(1, D), space="toy", pad=(True, True))
    after = store.put(torch.ones(1, D), space="toy", pad=(False, True))
    plain = store.put(torch.ones(1, D), space="toy")
    forged = placeholder("0" * 32)
    pieces = split_prompt(f"a {both}  b {plain} c{after} {both} {forged} d", store)
    texts = [p if isinstance(p, str) else "<soft>" for p in pieces]
    # One space on each padded side goes (a second one is content); unpadded and forged placeholders keep theirs.
    assert texts == ["a", "<soft>", " b ", "<soft>", " c", "<soft>", "<soft>", f"{forged} d"]
    assert store.resolve(handle_of(both)).pad == (True, True)  # type: ignore[union-attr]
    # A splitter that trimmed the space at a chunk edge leaves nothing to drop: the text around is kept whole.
    assert [p for p in split_prompt(f"x\n{both}\ny", store) if isinstance(p, str)] == ["x\n", "\ny"]


def test_stale_placeholder_stays_text_after_eviction() -> None:
    store = SoftTokenStore(max_bytes=ENTRY_BYTES)
    stale = store.put(torch.zeros(D), space="toy", pin=False)
    store.put(torch.ones(D), space="toy")
    assert split_prompt(f"x {stale} y", store) == [f"x {stale} y"]
    # ragzip's generator splits strictly: a handle the store issued and lost is an error, never silent text.
    with pytest.raises(SoftTokenError, match=re.escape("whose vectors were evicted before this generation")):
        split_prompt(f"x {stale} y", store, strict=True)


def test_has_placeholder_and_reject_placeholders() -> None:
    text = f"look: {placeholder('ab' * 16)}"
    assert has_placeholder(text) and not has_placeholder("<<ragzip:soft:short>>")
    reject_placeholders("plain text", who="remote LLM")
    with pytest.raises(SoftTokenError, match=re.escape("the prompt for remote LLM contains ragzip soft-token "
                                                       "placeholders")):
        reject_placeholders(text, who="remote LLM")


def test_default_store_is_shared() -> None:
    assert default_store() is default_store()


def test_put_segments_name_their_handle_placeholder_and_size() -> None:
    store = SoftTokenStore()
    one, two = store.put_segments([torch.zeros(D), torch.zeros(3, D)], space="toy")
    assert (one.placeholder, one.n_vectors) == (placeholder(one.handle), 1)
    assert (two.placeholder, two.n_vectors) == (placeholder(two.handle), 3)
    with store.request() as request:
        (three,) = request.put_segments([torch.zeros(2, D)], space="toy")
    assert request.handles == [three.handle] and store.resolve(three.handle) is not None
