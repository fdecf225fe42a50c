"""Soft tokens stay pinned from ``put`` until the generator reads them.

What a plain LRU store would do, and these tests rule out: a second request evicts the first one's vectors before
generation and the placeholders reach the model as text, silently; a request larger than the store evicts its own
vectors; nothing is freed after generation. Tiny models built from configs (xRAG projector over the ``hash:16``
embedder, a 2-layer Llama).
"""

from __future__ import annotations

import re
import threading

import pytest
import torch

from ragzip import Passage, SoftTokenError, SoftTokenStore, build_compressor
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.plugins.xrag import ProjectorConfig, XRAGProjector
from ragzip.softstore import PLACEHOLDER_RE

GEN = "embedded:smollm2-135m"
D_EMB, D_GEN = 16, 32
VECTOR_BYTES = D_GEN * 4  # one float32 soft token
PASSAGES = 3


@pytest.fixture(scope="module")
def tokenizer(smol_tok):
    return smol_tok  # tiny_lm (conftest): the 2-layer, 32-wide Llama over this tokenizer


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(1)
    projector = XRAGProjector(ProjectorConfig(embedder="hash:16", embedder_dim=D_EMB, generator=GEN,
                                              generator_hidden=D_GEN)).eval()
    return projector.save_pretrained(tmp_path_factory.mktemp("xrag") / "projector")


def setup(tiny_lm, tokenizer, artifact, store: SoftTokenStore):
    gen = HFGenerator(GeneratorConfig(model=GEN, max_new_tokens=1), store=store, model=tiny_lm, tokenizer=tokenizer)
    xrag = build_compressor({"type": "xrag", "artifact": str(artifact)})
    xrag.bind(gen)
    return gen, xrag


def passages(tag: str, n: int = PASSAGES) -> list[Passage]:
    return [Passage(f"{tag} passage number {i} about the city of Paris.", id=f"{tag}{i}") for i in range(n)]


def soft_positions(gen: HFGenerator, prompt: str) -> int:
    """Prompt positions when every placeholder in ``prompt`` is read as its one soft vector (computed from text)."""
    pieces: list = []
    pos = 0
    for m in PLACEHOLDER_RE.finditer(prompt):
        pieces += [prompt[pos:m.start()], torch.zeros(1, D_GEN)]
        pos = m.end()
    pieces.append(prompt[pos:])
    with torch.inference_mode():
        return gen.embed_pieces([p for p in pieces if not isinstance(p, str) or p],
                                add_special_tokens=gen.adds_special_tokens(prompt)).shape[0]


def test_second_request_cannot_evict_the_first_ones_soft_tokens(tiny_lm, tokenizer, artifact) -> None:
    store = SoftTokenStore(max_bytes=PASSAGES * VECTOR_BYTES + 8, wait_s=0.05)  # holds one request
    gen, xrag = setup(tiny_lm, tokenizer, artifact, store)
    first = xrag.compress("Where is it?", passages("a"))
    with pytest.raises(SoftTokenError, match=re.escape(
            f"the SoftTokenStore is full: {PASSAGES * VECTOR_BYTES} bytes of soft tokens do not fit beside "
            f"{PASSAGES * VECTOR_BYTES} bytes pinned by requests not yet generated (max_bytes=")):
        xrag.compress("Where else?", passages("b"))
    prompt = gen.answer_prompt("Where is it?", first)
    expected = soft_positions(gen, prompt)
    out = gen.answer("Where is it?", first)  # the first request still reads its soft tokens
    assert out.prompt_positions == expected
    assert len(store) == 0 and store.nbytes == 0  # read handles are released
    second = xrag.compress("Where else?", passages("b"))  # now there is room
    assert gen.answer("Where else?", second).prompt_positions == soft_positions(
        gen, gen.answer_prompt("Where else?", second))


def test_two_concurrent_requests_over_a_store_that_holds_one(tiny_lm, tokenizer, artifact) -> None:
    store = SoftTokenStore(max_bytes=PASSAGES * VECTOR_BYTES + 8, wait_s=30.0)
    gen, xrag = setup(tiny_lm, tokenizer, artifact, store)
    barrier = threading.Barrier(2)
    results: dict[str, tuple[int, int]] = {}
    errors: list[BaseException] = []

    def request(tag: str) -> None:
        try:
            barrier.wait()
            ctx = xrag.compress(f"Where is {tag}?", passages(tag))  # the second one waits for the first's release
            prompt = gen.answer_prompt(f"Where is {tag}?", ctx)
            expected = soft_positions(gen, prompt)
            results[tag] = (gen.answer(f"Where is {tag}?", ctx).prompt_positions, expected)
        except BaseException as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=request, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert set(results) == {"a", "b"}
    for got, expected in results.values():
        assert got == expected  # every placeholder was read as one vector, none as text
    assert len(store) == 0 and store.pinned == 0


def test_request_bigger_than_the_store_fails_at_once_and_leaves_nothing_pinned(tiny_lm, tokenizer, artifact):
    store = SoftTokenStore(max_bytes=2 * VECTOR_BYTES, wait_s=60.0)  # a long wait that must not be used
    _, xrag = setup(tiny_lm, tokenizer, artifact, store)
    with pytest.raises(SoftTokenError, match=re.escape(
            f"soft tokens of {PASSAGES * VECTOR_BYTES} bytes exceed the store's max_bytes={2 * VECTOR_BYTES}; "
            "raise `max_bytes` when building the SoftTokenStore")):
        xrag.compress("q", passages("a"))
    assert len(store) == 0 and store.pinned == 0


def test_refrag_style_request_bigger_than_the_store_releases_what_it_put() -> None:
    store = SoftTokenStore(max_bytes=2 * VECTOR_BYTES, wait_s=60.0)
    with pytest.raises(SoftTokenError, match=re.escape(
            f"soft tokens of {3 * VECTOR_BYTES} bytes exceed the store's max_bytes={2 * VECTOR_BYTES}")):
        with store.request() as request:  # one put per run of chunks, as REFRAG does
            for _ in range(3):
                request.put(torch.zeros(D_GEN), space="toy")
    assert len(store) == 0 and store.pinned == 0


def test_generator_checks_every_emitted_placeholder_resolved(tiny_lm, tokenizer, artifact) -> None:
    store = SoftTokenStore()
    gen, xrag = setup(tiny_lm, tokenizer, artifact, store)
    ctx = xrag.compress("Where?", passages("a"))
    gen.answer("Where?", ctx)
    with pytest.raises(SoftTokenError, match=re.escape(
            "context #0 (xrag) holds soft tokens that this generator's store cannot resolve (their vectors were "
            "released). A compressed context is read once: compress again for another generation.")):
        gen.answer("Where?", ctx)
    other = HFGenerator(gen.config, store=SoftTokenStore(), model=tiny_lm, tokenizer=tokenizer)
    ctx = xrag.compress("Where?", passages("b"))
    with pytest.raises(SoftTokenError, match=re.escape("(they were put into a different SoftTokenStore). Bind the "
                                                       "compressor to this generator")):
        other.answer("Where?", ctx)
    store.release(ctx)  # the owner of a context it will not generate from releases it
    assert len(store) == 0


def test_unreleased_pins_expire_so_an_abandoned_request_cannot_fill_the_store() -> None:
    store = SoftTokenStore(max_bytes=2 * VECTOR_BYTES, pin_ttl_s=0.01, wait_s=0.0)
    store.put(torch.zeros(2, D_GEN), space="toy")  # compressed, never generated, never released
    threading.Event().wait(0.05)
    store.put(torch.zeros(2, D_GEN), space="toy")  # the expired pin no longer blocks
    assert store.nbytes == 2 * VECTOR_BYTES


def test_soak_1000_requests_bounded_bytes_nothing_leaked(tiny_lm, tokenizer, artifact) -> None:
    torch.set_num_threads(1)
    capacity = 3 * 2 * VECTOR_BYTES  # three requests of two passages
    store = SoftTokenStore(max_bytes=capacity, wait_s=30.0)
    gen, xrag = setup(tiny_lm, tokenizer, artifact, store)
    wrong: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        try:
            for i in range(250):
                ctx = xrag.compress(f"q{w}-{i}", passages(f"w{w}r{i}", 2))
                prompt = gen.answer_prompt(f"q{w}-{i}", ctx)
                expected = soft_positions(gen, prompt)
                got = gen.generate([prompt])[0].prompt_positions
                if got != expected:
                    with lock:
                        wrong.append(i)
        except BaseException as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    assert not wrong  # no request ever read a placeholder as text
    assert store.peak_bytes <= capacity
    assert len(store) == 0 and store.nbytes == 0 and store.pinned == 0  # nothing leaked
