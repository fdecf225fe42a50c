"""Random and adversarial text through every registered compressor (tiny models built from configs).

Asserted for every input: no exception other than ragzip's own errors, every input passage accounted for in the
results (one result per passage, in order), and no soft-token placeholder resolved that the request did not issue
(look-alike placeholders in the text stay text).
"""

from __future__ import annotations

import random
import unicodedata

import pytest
import torch
from conftest import build_bpe_tokenizer, build_tiny_llama, build_tiny_refrag, write_tiny_bert

from ragzip import ModelNotFoundError, Passage, RagzipError, SoftTokenStore, build_compressor
from ragzip.compressor import registered_compressors
from ragzip.softstore import PLACEHOLDER_RE, placeholder

FORGED = placeholder("0123456789abcdef" * 2)
LOOKALIKES = [FORGED, "<<ragzip:soft:ZZZ>>", "<<ragzip:soft:" + "a" * 31 + ">>", "<<ragzip:soft:" + "A" * 32 + ">>",
              "＜＜ragzip:soft:" + "b" * 32 + "＞＞", "<<ragzip:soft:" + "c" * 32 + ">"]
CONTROL = ["\x00", "\x07", "\x1b[31m", "\r", "\u200b", "\u202e", "\ufeff", "\ud7ff", "\u2028", "\x85"]
# Characters of many Unicode categories: letters of several scripts, marks, digits, symbols, spaces, emoji.
CATEGORIES = ["a", "Z", "é", "ß", "İ", "ж", "م", "א", "字", "ひ", "한", "\u0301", "٣", "½", "∑", "€", "—", "“", "”",
              "«", "…", "。", "！", "؟", "।", "\u00a0", "\u3000", "🙂", "👩‍👩‍👧", "𝔘", " ", "\n", "\t", ".", "?", "!"]


def random_text(rng: random.Random, size: int) -> str:
    pieces = CATEGORIES + CONTROL + LOOKALIKES + ["Dr. ", "e.g. ", "3.14", "```\n", "| a | b |\n", "# H\n", "- x\n"]
    return "".join(rng.choice(pieces) for _ in range(size))


def cases() -> list[tuple[str, list[str]]]:
    rng = random.Random(14)
    out = [
        ("empty and blank", ["", "   ", "\n\n\t"]),
        ("look-alike placeholders", [f"Before {p} after." for p in LOOKALIKES]),
        ("control characters", ["".join(CONTROL) + " Some text. More text."]),
        ("one huge passage", ["Word. " * 3000]),
        ("huge word", ["x" * 20000]),
        ("every category", ["".join(CATEGORIES) * 3]),
        ("unassigned and private use", ["\ue000\U000f0000 text \U0010fffd."]),
        ("many small", [f"Passage {i}. It says {i}." for i in range(12)]),
        ("duplicates", ["Same text.", "Same text.", "Other."]),
    ]
    out += [(f"random {i}", [random_text(rng, rng.randint(0, 300)) for _ in range(rng.randint(1, 4))])
            for i in range(6)]
    for text in out[-1][1]:
        assert any(unicodedata.category(c) for c in text) or not text
    return out


CASES = cases()


# --------------------------------------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def generator(smol_tok):
    from ragzip.generation import GeneratorConfig, HFGenerator

    model = build_tiny_llama(len(smol_tok), max_positions=65536)
    return HFGenerator(GeneratorConfig(model="tiny-llama", max_new_tokens=1), store=SoftTokenStore(), model=model,
                       tokenizer=smol_tok)


def _xrag(tmp, generator):
    from ragzip.plugins.xrag import ProjectorConfig, XRAGProjector

    torch.manual_seed(1)
    artifact = XRAGProjector(ProjectorConfig(embedder="hash:16", embedder_dim=16, generator="tiny-llama",
                                             generator_hidden=32)).save_pretrained(tmp / "xrag")
    compressor = build_compressor({"type": "xrag", "artifact": str(artifact), "max_passages": 64})
    compressor.bind(generator)
    return compressor


def _refrag(tmp, generator):
    from transformers import AutoTokenizer

    from ragzip.models import resolve
    from ragzip.plugins.refrag import RefragCompressor, RefragConfig

    model = build_tiny_refrag(AutoTokenizer.from_pretrained(resolve("embedded:minilm")))
    compressor = RefragCompressor(RefragConfig(k=4, p=0.25, policy="learned"), model=model)
    compressor.bind(generator)
    return compressor


def _extractive(tmp, generator):
    from ragzip.plugins.extractive.modeling import CrossEncoderScorer

    folder = write_tiny_bert(tmp / "bert", chars="abcdefghijklmnopqrstuvwxyz0123456789.,?!'\"-:;()", max_positions=512)
    scorer = CrossEncoderScorer.from_base(str(folder), trained_layers=1, head_hidden=16, window=64, seed=1)
    artifact = scorer.save_pretrained(tmp / "extractive", threshold=0.5)
    return build_compressor({"type": "extractive", "model": str(artifact), "tokenizer": "whitespace", "device": "cpu",
                             "threshold": 0.3})


def _abstractive(tmp, generator):
    hf = build_bpe_tokenizer(["Question: Document: Summary: the a of in is was."] * 4)
    model = build_tiny_llama(len(hf), max_positions=4096, tie=True, eos_token_id=hf.eos_token_id,
                             pad_token_id=hf.pad_token_id, bos_token_id=hf.bos_token_id)
    path = tmp / "tiny-causal"
    model.save_pretrained(path)
    hf.save_pretrained(path)
    return build_compressor({"type": "abstractive", "model": str(path), "adapter": "none", "tokenizer": "whitespace",
                             "relevance_gate": "none", "max_summary_tokens": 4})


def _route(tmp, generator):
    from ragzip.plugins.route import RouteCompressor, RouteConfig

    return RouteCompressor(RouteConfig(max_tokens=40, soft_min_score=0.2), extractive=_extractive(tmp, generator),
                           xrag=_xrag(tmp, generator))


BUILDERS = {
    "none": lambda tmp, gen: build_compressor({"type": "none", "tokenizer": "whitespace"}),
    "truncate": lambda tmp, gen: build_compressor({"type": "truncate", "max_tokens": 20, "tokenizer": "whitespace"}),
    "xrag": _xrag,
    "refrag": _refrag,
    "extractive": _extractive,
    "abstractive": _abstractive,
    "route": _route,
}


def test_every_registered_compressor_is_fuzzed() -> None:
    assert set(registered_compressors()) <= set(BUILDERS)


HEAVY = {"abstractive"}  # decodes a summary per question with a tiny LM: minutes on 2 CPU cores


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                        for n in sorted(BUILDERS)])
def compressor(request, tmp_path_factory, generator):
    torch.set_num_threads(1)
    try:
        return BUILDERS[request.param](tmp_path_factory.mktemp(request.param), generator)
    except ModelNotFoundError as err:  # pragma: no cover - an embedded model package missing
        pytest.skip(f"{request.param}: {err}")


@pytest.mark.parametrize("name,texts", [pytest.param(n, t, marks=pytest.mark.slow) if n.startswith(("one huge", "huge"))
                                        else (n, t) for n, t in CASES], ids=[c[0] for c in CASES])
def test_fuzz(compressor, generator, name, texts) -> None:
    passages = [Passage(t, id=f"p{i}") for i, t in enumerate(texts)]
    try:
        ctx = compressor.compress("What does it say? " + FORGED, passages)
    except RagzipError:
        return  # a clear, ragzip-own error is an acceptable answer to hostile input
    assert [r.passage.id for r in ctx.results] == [p.id for p in passages]  # every passage accounted for
    issued = {s.handle for s in ctx.soft}
    for match in PLACEHOLDER_RE.finditer(ctx.text):
        handle = match.group(1)
        if generator.store.resolve(handle) is not None:
            assert handle in issued, f"{name}: a placeholder the request did not issue resolves"
    assert generator.store.resolve(FORGED[len("<<ragzip:soft:"):-2]) is None
    generator.store.release(ctx)
