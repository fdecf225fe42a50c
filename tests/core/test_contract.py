"""The compressor contract, executable: every registered compressor, built tiny and offline, keeps the rules of
:class:`ragzip.Compressor` (CONTRIBUTING.md, "Rules every compressor keeps").

One table, :data:`BUILDERS`, says how to build each ``type:`` from tiny models (the builders of ``conftest.py``); one
more, :data:`ROUND_TRIPS`, how each trainable one saves and reloads what it was trained. A registered type missing
from a table fails here, loudly: add its row. The one exception is ``route``, whose constructor is not settled: it is
skipped with the reason when it cannot be built from the tiny extractive and xrag compressors.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import build_bpe_tokenizer, build_tiny_llama, build_tiny_refrag, write_tiny_bert

from ragzip import ChainCompressor, CompressedContext, Compressor, ConfigError, Passage, build_compressor
from ragzip.compressor import get_compressor_class, registered_compressors
from ragzip.report import NOT_INCLUDED, report
from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore
from ragzip.types import DECISIONS

QUERY = "Who designed the Eiffel Tower?"
OTHER_QUERY = "Where was Marie Curie born?"
PASSAGES = [
    Passage("The Eiffel Tower is in Paris. It was designed by the company of Gustave Eiffel. It opened in 1889.",
            id="eiffel", metadata={"title": "Eiffel Tower"}, score=0.9),
    Passage("Marie Curie was born in Warsaw. She won two Nobel Prizes.", id="curie", score=0.5),
    Passage("The Rhine flows through Basel. Basel is a city in Switzerland.", id="rhine", score=0.2),
]
WORDS = {"tokenizer": "whitespace"}  # contexts counted in words: the generator's tokenizer is not what is tested

# The corpus of the tiny BPE tokenizer the abstractive summarizer reads with.
CORPUS = [*(p.text for p in PASSAGES), QUERY, OTHER_QUERY, "Question: Document: Summary: the of and a in is was by"]


# ------------------------------------------------------------------------------------------------ tiny parts
@pytest.fixture(scope="session")
def extractive_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A crossencoder artifact over a 2-layer character-level BERT, with a non-trivial (random) head."""
    from ragzip.plugins.extractive.modeling import CrossEncoderScorer

    base = write_tiny_bert(tmp_path_factory.mktemp("contract-bert"))
    scorer = CrossEncoderScorer.from_base(str(base), trained_layers=1, head_hidden=16, window=64, seed=1)
    with torch.no_grad():
        for p in scorer.model.trained_parameters().values():
            p.add_(torch.randn_like(p) * 0.02)
    return scorer.save_pretrained(tmp_path_factory.mktemp("contract-extractive"), threshold=0.5)


@pytest.fixture(scope="session")
def summarizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama and a BPE tokenizer trained on :data:`CORPUS`, saved as one model folder."""
    tokenizer = build_bpe_tokenizer(CORPUS * 4, vocab_size=400)
    model = build_tiny_llama(len(tokenizer), tie=True, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    path = tmp_path_factory.mktemp("contract-summarizer")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def summarizer(summarizer_dir: str) -> Any:
    """The tiny summarizer with a LoRA adapter "trained" to random weights: unlike the bare random model (which only
    emits spaces, an empty summary), it writes a summary, so the summary path of the contract is exercised."""
    from ragzip.plugins.abstractive.modeling import LoRAConfig, Summarizer

    trained = Summarizer.load(summarizer_dir, private=True)
    trained.add_adapter(LoRAConfig(rank=2, target_modules=("q_proj", "v_proj")))
    torch.manual_seed(2)
    for p in trained.trainable_parameters():
        torch.nn.init.normal_(p, std=0.5)
    trained.model.eval()
    return trained


@pytest.fixture(scope="session")
def xrag_projector() -> Any:
    """A projector from a 16-wide hash embedder into a 32-wide generator space."""
    from ragzip.plugins.xrag import ProjectorConfig, XRAGProjector

    torch.manual_seed(1)
    config = ProjectorConfig(embedder="hash:16", embedder_dim=16, generator="embedded:smollm2-135m",
                             generator_hidden=32)
    return XRAGProjector(config).eval()


@pytest.fixture(scope="session")
def refrag_decoder(smol_tok: Any) -> Any:
    return build_tiny_llama(len(smol_tok))


@pytest.fixture(scope="session")
def refrag_model(minilm_tok: Any) -> Any:
    return build_tiny_refrag(minilm_tok)


# ------------------------------------------------------------------------------------------------ builders
def _abstractive_config(folder: str, **overrides: Any) -> Any:
    from ragzip.plugins.abstractive import AbstractiveConfig

    # empty_threshold=1.0: never empty, so decoding runs; no gate (it would need the shipped classifier).
    options = {"model": folder, "adapter": "none", "input": "passages", "relevance_gate": "none",
               "empty_threshold": 1.0, "max_summary_tokens": 6, "batch_size": 3, **WORDS, **overrides}
    return AbstractiveConfig(**options)


def _refrag(request: pytest.FixtureRequest, model: Any) -> Compressor:
    from ragzip.generation import GeneratorConfig, HFGenerator
    from ragzip.plugins.refrag import RefragCompressor, RefragConfig

    generator = HFGenerator(GeneratorConfig(model="tiny-llama", max_new_tokens=2), store=SoftTokenStore(),
                            model=request.getfixturevalue("refrag_decoder"),
                            tokenizer=request.getfixturevalue("smol_tok"))
    compressor = RefragCompressor(RefragConfig(k=4, p=0.5, policy="random"), model=model)
    compressor.bind(generator)
    return compressor


def _xrag(projector: Any = None, artifact: Path | None = None) -> Compressor:
    from ragzip.plugins.xrag import XRAGCompressor, XRAGConfig

    return XRAGCompressor(XRAGConfig(artifact=str(artifact or "default"), **WORDS), projector=projector,
                          store=SoftTokenStore())


def _route(request: pytest.FixtureRequest) -> Compressor:
    """The router over the tiny extractive and xrag compressors; skipped, naming why, if it cannot be built from them
    (its constructor is not settled)."""
    route = get_compressor_class("route")
    xrag = BUILDERS["xrag"](request)
    try:
        return route(route.config_class(max_tokens=16, max_soft=1, **WORDS), extractive=BUILDERS["extractive"](request),
                     xrag=xrag, store=xrag.store)
    except (TypeError, ConfigError) as err:
        pytest.skip(f"route: cannot build it from a tiny extractive and xrag compressor ({type(err).__name__}: {err}); "
                    "update its row in BUILDERS (tests/core/test_contract.py) to name the tiny parts it needs.")


BUILDERS: dict[str, Callable[[pytest.FixtureRequest], Compressor]] = {
    "none": lambda request: build_compressor({"type": "none", **WORDS}),
    "truncate": lambda request: build_compressor({"type": "truncate", "max_tokens": 12, **WORDS}),
    "extractive": lambda request: build_compressor({
        "type": "extractive", "model": str(request.getfixturevalue("extractive_artifact")), "device": "cpu",
        "threshold": 0.5, **WORDS}),
    "abstractive": lambda request: get_compressor_class("abstractive")(
        _abstractive_config(request.getfixturevalue("summarizer_dir")),
        summarizer=request.getfixturevalue("summarizer")),
    "xrag": lambda request: _xrag(projector=request.getfixturevalue("xrag_projector")),
    "refrag": lambda request: _refrag(request, request.getfixturevalue("refrag_model")),
    "route": _route,
}
"""How to build each registered ``type:`` from tiny models, offline, in well under a second once the session's parts
exist."""


# ------------------------------------------------------------------------------------------------ round trips
def _extractive_round_trip(request: pytest.FixtureRequest, folder: Path) -> tuple[Compressor, Compressor]:
    from ragzip.plugins.extractive import ExtractiveCompressor, ExtractiveConfig
    from ragzip.plugins.extractive.modeling import CrossEncoderScorer

    trained = CrossEncoderScorer.from_pretrained(request.getfixturevalue("extractive_artifact"), device="cpu")
    saved = trained.save_pretrained(folder, threshold=0.5)
    config = {"device": "cpu", "threshold": 0.5, **WORDS}
    return (ExtractiveCompressor(ExtractiveConfig(**config), scorer=trained),
            build_compressor({"type": "extractive", "model": str(saved), **config}))


def _abstractive_round_trip(request: pytest.FixtureRequest, folder: Path) -> tuple[Compressor, Compressor]:
    from ragzip.plugins.abstractive import AbstractiveCompressor

    base = request.getfixturevalue("summarizer_dir")
    saved = request.getfixturevalue("summarizer").save_adapter(folder, dtype="float32")
    return BUILDERS["abstractive"](request), AbstractiveCompressor(_abstractive_config(base, adapter=str(saved)))


def _xrag_round_trip(request: pytest.FixtureRequest, folder: Path) -> tuple[Compressor, Compressor]:
    projector = request.getfixturevalue("xrag_projector")
    return _xrag(projector=projector), _xrag(artifact=projector.save_pretrained(folder))


def _refrag_round_trip(request: pytest.FixtureRequest, folder: Path) -> tuple[Compressor, Compressor]:
    from conftest import tiny_refrag_encoder

    from ragzip.plugins.refrag import RefragModel

    trained = request.getfixturevalue("refrag_model")
    tokenizer = request.getfixturevalue("minilm_tok")
    trained.save_pretrained(folder)
    base = tiny_refrag_encoder(tokenizer, seed=0)  # the base encoder by name; the trained top layer comes from disk
    loaded = RefragModel.from_pretrained(folder, encoder=base, encoder_tokenizer=tokenizer).eval()
    return _refrag(request, trained), _refrag(request, loaded)


ROUND_TRIPS: dict[str, Callable[[pytest.FixtureRequest, Path], tuple[Compressor, Compressor]]] = {
    "extractive": _extractive_round_trip,
    "abstractive": _abstractive_round_trip,
    "xrag": _xrag_round_trip,
    "refrag": _refrag_round_trip,
}
"""For each trainable ``type:``: a compressor over an in-memory trained part, and one over it saved and loaded."""


def _trainable(name: str) -> bool:
    """A plugin is trainable when its folder has a ``train`` module (what ``ragzip train <type>`` runs)."""
    package = get_compressor_class(name).__module__.rsplit(".", 1)[0]
    return package.startswith("ragzip.plugins.") and importlib.util.find_spec(f"{package}.train") is not None


TYPES = registered_compressors()


@pytest.fixture(params=TYPES)
def compressor(request: pytest.FixtureRequest) -> Compressor:
    """Every registered compressor, built tiny; a type without a builder fails here."""
    build = BUILDERS.get(request.param)
    if build is None:
        pytest.fail(f"no tiny builder for the registered compressor type {request.param!r}: add a row to BUILDERS in "
                    "tests/core/test_contract.py that builds it offline from tiny models (see conftest.py).")
    built = build(request)
    assert built.name == request.param
    return built


# ------------------------------------------------------------------------------------------------ what is checked
def check_accounting(ctx: CompressedContext, inputs: list[Passage], query: str = QUERY) -> None:
    """Every input passage's fate is visible: one result per passage, in order, with a decision the rules allow."""
    assert ctx.query == query
    assert len(ctx.results) == len(inputs), "a passage was lost (or invented)"
    assert [r.passage for r in ctx.results] == inputs, "results must refer to the input passages, in input order"
    for r in ctx.results:
        assert r.decision in DECISIONS
        record = r.provenance()
        json.dumps(record, allow_nan=False)
        assert record["passage_id"] == r.passage.id and record["decision"] == r.decision
        if r.decision in NOT_INCLUDED:
            assert r.text == "" and r.tokens_after == 0 and not r.soft, r
            assert r.reason, f"{r.passage.id}: a passage left out must say why"
        elif r.decision == "summarized":
            assert ctx.summary is not None and r.text == ""
        elif r.decision == "soft":
            assert r.soft and all(s.placeholder in r.text for s in r.soft), r
        else:
            assert r.text and not r.soft, r
    info = report(ctx)
    assert sum(info["decisions"].values()) == len(inputs)
    assert [x["passage_id"] for x in info["not_included"]] == [
        r.passage.id for r in ctx.results if r.decision in NOT_INCLUDED]
    json.dumps(info, allow_nan=False)


def outcome(ctx: CompressedContext, store: SoftTokenStore) -> dict[str, Any]:
    """What a context says, each soft-token placeholder replaced by the vectors it stands for (handles differ from one
    call to the next, the vectors must not)."""
    rows = []
    for r in ctx.results:
        entries = [store.resolve(s.handle) for s in r.soft]
        assert all(e is not None for e in entries), "a placeholder the compressor just issued does not resolve"
        rows.append({"id": r.passage.id, "decision": r.decision, "text": PLACEHOLDER_RE.sub("<soft>", r.text),
                     "tokens": (r.tokens_before, r.tokens_after), "scores": [u.score for u in r.units],
                     "vectors": [e.vectors for e in entries if e is not None]})
    return {"summary": ctx.summary, "method": ctx.method, "rows": rows}


def assert_same_outcome(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert (a["summary"], a["method"]) == (b["summary"], b["method"])
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        assert {k: ra[k] for k in ("id", "decision", "text", "tokens")} == {k: rb[k] for k in ("id", "decision",
                                                                                              "text", "tokens")}
        assert [s is None for s in ra["scores"]] == [s is None for s in rb["scores"]]
        assert [s for s in ra["scores"] if s is not None] == pytest.approx(
            [s for s in rb["scores"] if s is not None], abs=1e-5)
        assert len(ra["vectors"]) == len(rb["vectors"])
        for va, vb in zip(ra["vectors"], rb["vectors"]):
            torch.testing.assert_close(va, vb, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------ the contract
def test_every_registered_compressor_is_covered():
    assert {"none", "truncate", "extractive", "abstractive", "xrag", "refrag"} <= set(TYPES)
    missing = [name for name in TYPES if name not in BUILDERS]
    assert missing == [], f"registered compressors without a tiny builder in BUILDERS: {missing}"
    untested = [name for name in TYPES if _trainable(name) and name not in ROUND_TRIPS]
    assert untested == [], f"trainable compressors without a save -> load round trip in ROUND_TRIPS: {untested}"


def test_empty_input_gives_an_empty_context(compressor):
    ctx = compressor.compress(QUERY, [])
    assert ctx.results == () and ctx.text == "" and ctx.segments == [] and ctx.tokens_after == 0
    assert ctx.method == compressor.name


def test_one_passage(compressor):
    ctx = compressor.compress(QUERY, PASSAGES[:1])
    check_accounting(ctx, PASSAGES[:1])
    assert ctx.method == compressor.name


def test_duplicates_and_blank_passages_are_reported_not_lost(compressor):
    inputs = [PASSAGES[0], Passage("   ", id="blank"), PASSAGES[1], PASSAGES[0]]
    ctx = compressor.compress(QUERY, inputs)
    check_accounting(ctx, inputs)
    assert [r.decision for r in ctx.results][1::2] == ["empty", "duplicate"]


def test_every_passage_fate_is_visible(compressor):
    inputs = [*PASSAGES, Passage("Basel has a zoo.", id="zoo")]
    ctx = compressor.compress(QUERY, inputs)
    check_accounting(ctx, inputs)
    assert ctx.decisions() == {r.passage.id: r.decision for r in ctx.results}
    assert all(r.tokens_before > 0 for r in ctx.results), "token counts before compression are the counter's"
    if ctx.soft:  # adapters and chains decide from the class attribute whether only ragzip's generator may read it
        assert compressor.soft, f"{compressor.name} emits soft tokens but does not declare `soft = True`"


def test_chains_after_a_pass_through_stage(compressor):
    first = build_compressor({"type": "none", **WORDS}, store=compressor.store)
    ctx = ChainCompressor([first, compressor]).compress(QUERY, PASSAGES)
    check_accounting(ctx, PASSAGES)
    assert ctx.method == f"none+{compressor.name}"
    assert all([s.method for s in r.stages] == ["none", compressor.name] for r in ctx.results)


def test_chains_before_a_pass_through_stage_or_says_why_not(compressor):
    last = build_compressor({"type": "none", **WORDS}, store=compressor.store)
    if compressor.soft:
        with pytest.raises(ConfigError, match=re.escape("can only be the last stage of a chain")):
            ChainCompressor([compressor, last])
        return
    try:
        ctx = ChainCompressor([compressor, last]).compress(QUERY, PASSAGES)
    except ConfigError as err:  # a summary cannot be mapped back to passages for a later stage
        assert "last in the chain" in str(err)
        return
    check_accounting(ctx, PASSAGES)


def test_batch_equals_one_by_one(compressor):
    queries = [QUERY, OTHER_QUERY, QUERY]
    lists = [PASSAGES, PASSAGES[1:], PASSAGES[:1]]
    batch = compressor.compress_batch(queries, lists)
    single = [compressor.compress(q, p) for q, p in zip(queries, lists, strict=True)]
    for b, s, q, p in zip(batch, single, queries, lists, strict=True):
        check_accounting(b, p, q)
        assert_same_outcome(outcome(b, compressor.store), outcome(s, compressor.store))


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_artifact_save_load_round_trip(name, request, tmp_path):
    if name not in TYPES:
        pytest.fail(f"ROUND_TRIPS names {name!r}, which is not a registered compressor type.")
    trained, loaded = ROUND_TRIPS[name](request, tmp_path / "artifact")
    assert sorted(p.name for p in (tmp_path / "artifact").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "artifact" / "config.json").read_text())["type"] == name
    assert_same_outcome(outcome(trained.compress(QUERY, PASSAGES), trained.store),
                        outcome(loaded.compress(QUERY, PASSAGES), loaded.store))
