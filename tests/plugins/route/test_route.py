"""route: per passage text, one soft token or nothing under one budget. Tiny models (a table scorer, a random
projector over `hash:16`, a 2-layer Llama); no downloads."""

from __future__ import annotations

import pytest
import torch

from ragzip import Passage, SoftTokenStore, build_compressor
from ragzip.compressor import compressor_info, registered_compressors
from ragzip.errors import ConfigError
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.plugins.extractive import ExtractiveCompressor, ExtractiveConfig
from ragzip.plugins.route import RouteCompressor, RouteConfig
from ragzip.plugins.xrag import ProjectorConfig, XRAGProjector
from ragzip.softstore import PLACEHOLDER_RE

EMB = "hash:16"

BEST = "Paris is the capital of France."
MIDDLE = "France has many old cities and a long history of kings and revolutions."
LOW = "The Rhine flows through Basel and then on to the sea."
SCORES = {BEST: 0.9, MIDDLE: 0.4, LOW: 0.05}


class TableScorer:
    """Scores a sentence by a lookup table; counts its calls (one scoring pass per batch is the contract)."""

    default_threshold = 0.2

    def __init__(self) -> None:
        self.calls = 0

    def score(self, items):
        self.calls += 1
        return [[SCORES.get(s, 0.0) for s in it.sentences] for it in items]


@pytest.fixture()
def generator(tiny_lm, smol_tok):
    return HFGenerator(GeneratorConfig(model="embedded:smollm2-135m", max_new_tokens=3), store=SoftTokenStore(),
                       model=tiny_lm, tokenizer=smol_tok)


@pytest.fixture()
def projector_folder(tmp_path):
    torch.manual_seed(1)
    config = ProjectorConfig(embedder=EMB, embedder_dim=16, generator="embedded:smollm2-135m", generator_hidden=32)
    return XRAGProjector(config).eval().save_pretrained(tmp_path / "projector")


def make_route(generator, projector_folder, **options) -> tuple[RouteCompressor, TableScorer]:
    scorer = TableScorer()
    extractive = ExtractiveCompressor(ExtractiveConfig(), scorer=scorer)
    xrag = build_compressor({"type": "xrag", "artifact": str(projector_folder), "reencode": True, "embedder": EMB})
    route = RouteCompressor(RouteConfig(**options), extractive=extractive, xrag=xrag)
    route.bind(generator)
    return route, scorer


def passages() -> list[Passage]:
    return [Passage(LOW, id="low"), Passage(MIDDLE, id="middle"), Passage(BEST, id="best")]


def cost(generator, text: str) -> int:
    return generator.token_counter.count(text)


def test_registered_with_its_budget_field():
    assert "route" in registered_compressors()
    assert compressor_info("route").budget == "max_tokens"
    assert compressor_info("route").trainer is False


def test_text_for_the_best_passage_a_soft_token_for_the_middle_one_nothing_for_the_rest(generator, projector_folder):
    budget = cost(generator, BEST) + 1  # the best sentence and one soft token; not the middle passage's text
    route, _ = make_route(generator, projector_folder, max_tokens=budget)
    ctx = route.compress("What is the capital of France?", passages())
    assert [r.extra["route"] for r in ctx.results] == ["none", "soft", "text"]
    low, middle, best = ctx.results
    assert best.text == BEST and best.decision == "kept"
    assert middle.decision == "soft" and len(middle.soft) == 1
    assert PLACEHOLDER_RE.fullmatch(middle.text.strip())
    assert "relevance 0.4 >= soft_min_score 0.2" in middle.reason
    assert low.decision == "dropped" and low.text == ""
    assert "relevance 0.05 below soft_min_score 0.2" in low.reason
    assert sum(r.tokens_after for r in ctx.results) <= budget
    assert ctx.extra["routes"] == {"text": 1, "soft": 1, "none": 1}
    # The generator reads it, soft token and all, and releases what it read.
    answer = generator.answer("What is the capital of France?", ctx)
    assert isinstance(answer.text, str)


def test_a_budget_with_room_for_both_texts_uses_no_soft_token(generator, projector_folder):
    budget = cost(generator, BEST) + cost(generator, MIDDLE) + 2
    route, _ = make_route(generator, projector_folder, max_tokens=budget)
    ctx = route.compress("What is the capital of France?", passages())
    assert [r.extra["route"] for r in ctx.results] == ["none", "text", "text"]
    assert not any(r.soft for r in ctx.results)


@pytest.mark.parametrize("budget", [1, 2, 5, 9, 12, 20, 40])
def test_never_reads_more_than_the_budget(generator, projector_folder, budget):
    route, _ = make_route(generator, projector_folder, max_tokens=budget, soft_min_score=0.01)
    ctx = route.compress("What is the capital of France?", passages())
    assert sum(r.tokens_after for r in ctx.results) <= max(budget, min(cost(generator, BEST), budget))
    assert sum(r.tokens_after for r in ctx.results if r.extra["route"] == "soft") == sum(
        1 for r in ctx.results if r.extra["route"] == "soft")


def test_max_soft_zero_is_extractive_selection_at_the_same_budget(generator, projector_folder):
    budget = cost(generator, BEST) + 3
    route, _ = make_route(generator, projector_folder, max_tokens=budget, max_soft=0)
    ctx = route.compress("q?", passages())
    plain = ExtractiveCompressor(ExtractiveConfig(max_tokens=budget), scorer=TableScorer())
    plain.bind(generator)
    assert ctx.text == plain.compress("q?", passages()).text
    assert [r.extra["route"] for r in ctx.results] == ["none", "none", "text"]


def test_one_scoring_pass_for_a_batch_whatever_budgets_are_tried(generator, projector_folder):
    route, scorer = make_route(generator, projector_folder, max_tokens=cost(generator, BEST) + 1)
    outs = route.compress_batch(["q one?", "q two?", "q three?"], [passages(), passages()[1:], passages()[:1]])
    assert scorer.calls == 1
    assert [o.extra["routes"]["soft"] for o in outs] == [1, 1, 0]


def test_soft_token_and_passage_provenance_survive_duplicates_and_empties(generator, projector_folder):
    route, _ = make_route(generator, projector_folder, max_tokens=cost(generator, BEST) + 1)
    items = [*passages(), Passage(BEST, id="best"), Passage("   ", id="blank")]
    ctx = route.compress("q?", items)
    assert [r.decision for r in ctx.results][-2:] == ["duplicate", "empty"]
    assert len(ctx.results) == len(items)


@pytest.mark.parametrize("options,message", [
    ({"extractive": {"max_tokens": 10}}, "router decides"),
    ({"extractive": {"type": "extractive"}}, "remove `type`"),
    ({"xrag": "default"}, "must be a mapping"),
    ({"max_soft": -1}, "max_soft"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"soft_min_score": 1.5}, "soft_min_score"),
])
def test_bad_config_is_a_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        build_compressor({"type": "route", **options})


def test_soft_min_score_needs_a_calibrated_model_or_a_value(generator, projector_folder):
    route, scorer = make_route(generator, projector_folder)
    scorer.default_threshold = None
    with pytest.raises(ConfigError, match="set `soft_min_score` explicitly"):
        route.compress("q?", passages())


# ------------------------------------------------------------------------------------------------------ frameworks
def test_yaml_config_builds_the_router():
    import yaml

    route = build_compressor(yaml.safe_load("""
type: route
max_tokens: 64
max_soft: 1
soft_min_score: 0.3
extractive: {model: default, dtype: int8}
xrag: {artifact: default, context_template: "{title}: {soft}"}
"""))
    assert isinstance(route, RouteCompressor)
    assert (route.config.max_tokens, route.config.max_soft, route.config.extractive["dtype"]) == (64, 1, "int8")


def test_langchain_documents_carry_each_route(generator, projector_folder):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from ragzip.integrations.langchain import RagzipCompressor, RagzipLLM

    route, _ = make_route(generator, projector_folder, max_tokens=cost(generator, BEST) + 1)
    llm = RagzipLLM(generator)
    compressor = RagzipCompressor(compressor=route).bind(llm)
    docs = compressor.compress_documents([Document(page_content=p.text) for p in passages()],
                                         "What is the capital of France?")
    routes = {d.page_content: d.metadata["ragzip"]["route"] for d in docs}
    assert routes[BEST] == "text"
    assert [r for c, r in routes.items() if PLACEHOLDER_RE.fullmatch(c.strip())] == ["soft"]
    context = "\n\n".join(d.page_content for d in docs)
    assert isinstance(llm.invoke(generator.format_prompt("What is the capital of France?", context)), str)


def test_llamaindex_nodes_carry_each_route(generator, projector_folder):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    from ragzip.integrations.llamaindex import RagzipLLM, RagzipPostprocessor

    route, _ = make_route(generator, projector_folder, max_tokens=cost(generator, BEST) + 1)
    llm = RagzipLLM(generator)
    post = RagzipPostprocessor(compressor=route).bind(llm)
    nodes = post.postprocess_nodes([NodeWithScore(node=TextNode(text=p.text), score=0.5) for p in passages()],
                                   query_str="What is the capital of France?")
    routes = sorted(n.node.metadata["ragzip"]["route"] for n in nodes)
    assert routes == ["soft", "text"]  # the dropped passage is left out of the nodes, its fate in the report
    context = "\n\n".join(n.node.get_content() for n in nodes)
    assert isinstance(llm.complete(generator.format_prompt("What is the capital of France?", context)).text, str)


def test_the_score_memory_lasts_one_batch(generator, projector_folder):
    route, scorer = make_route(generator, projector_folder, max_tokens=cost(generator, BEST) + 1)
    route.compress("q one?", passages())
    route.compress("q two?", passages())
    assert scorer.calls == 2
    assert len(route.extractive._score_memo) == len(passages())  # only the last batch's passages are remembered
