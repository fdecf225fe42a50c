"""LlamaIndex adapters: the postprocessor's conventions and rules, ragzip's generator and embedder as LlamaIndex
components, and soft tokens end to end through a query engine (tiny models built in the test, no downloads)."""

from __future__ import annotations

import asyncio
import copy
import logging
import re

import pytest

pytest.importorskip("llama_index.core")

import torch  # noqa: E402
from adapter_helpers import (  # noqa: E402
    QUERY,
    TRUNCATE,
    CountingCompressor,
    SummaryCompressor,
    ToySoftCompressor,
    contains_row,
    spy_embeddings,
    tiny_causal_lm,
    tiny_generator,
)
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, MessageRole  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.llms.custom import CustomLLM  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import (  # noqa: E402
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

from ragzip.errors import ConfigError, InputError, SoftTokenError  # noqa: E402
from ragzip.integrations.llamaindex import (  # noqa: E402
    RagzipEmbedding,
    RagzipLLM,
    RagzipPostprocessor,
    SoftTokenGuard,
)
from ragzip.softstore import PLACEHOLDER_RE, SoftTokenStore, placeholder  # noqa: E402


# ------------------------------------------------------------------------------------------------- test helpers
def make_nodes() -> list[NodeWithScore]:
    texts = [
        ("eiffel", "The Eiffel Tower was designed by the company of Gustave Eiffel.", 0.9),
        ("liberty", "The Statue of Liberty was designed by Bartholdi.", 0.5),
        ("curie", "Marie Curie won two Nobel Prizes.", 0.2),
    ]
    return [
        NodeWithScore(
            node=TextNode(text=t, id_=i, metadata={"title": i.title()},
                          relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{i}")}),
            score=s,
        )
        for i, t, s in texts
    ]


@pytest.fixture(scope="module")
def tiny_parts():
    return tiny_causal_lm()


@pytest.fixture()
def generator(tiny_parts):
    return tiny_generator(tiny_parts)


def hash_embedding() -> RagzipEmbedding:
    from ragzip.embed import Embedder

    return RagzipEmbedding(Embedder("hash:64"))


def build_index(nodes: list[TextNode]) -> VectorStoreIndex:
    import faiss
    from llama_index.vector_stores.faiss import FaissVectorStore

    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(64))
    return VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                            embed_model=hash_embedding())


# ------------------------------------------------------------------------------------------------- conventions
def test_classes_follow_llamaindex_conventions():
    assert BaseNodePostprocessor in RagzipPostprocessor.__mro__
    assert CustomLLM in RagzipLLM.__mro__
    assert BaseEmbedding in RagzipEmbedding.__mro__
    assert RagzipPostprocessor.class_name() == "RagzipPostprocessor"
    assert RagzipLLM.class_name() == "RagzipLLM"
    assert RagzipEmbedding.class_name() == "RagzipEmbedding"
    for name in ("keep_dropped", "guard_foreign_llms", "method"):
        assert RagzipPostprocessor.model_fields[name].description
    post = RagzipPostprocessor(config=TRUNCATE)
    assert post.method == "truncate" and post.compressor.name == "truncate"
    assert "_compressor" in RagzipPostprocessor.__private_attributes__


def test_public_names_are_pinned():
    import ragzip.integrations.llamaindex as module

    assert module.__all__ == ["RagzipEmbedding", "RagzipLLM", "RagzipPostprocessor", "SoftTokenGuard", "qa_prompt"]


def test_empty_nodes_give_empty_list():
    post = RagzipPostprocessor(config=TRUNCATE)
    assert post.postprocess_nodes([], query_str=QUERY) == []
    assert asyncio.run(post.apostprocess_nodes([], query_str=QUERY)) == []


@pytest.mark.parametrize("bundle", [None, QueryBundle(""), QueryBundle("   ")])
def test_missing_query_is_a_value_error(bundle):
    post = RagzipPostprocessor(config=TRUNCATE)
    msg = ("RagzipPostprocessor needs the query to compress for: call `postprocess_nodes(nodes, query_str=...)` or "
           "pass a QueryBundle with a non-empty `query_str` (query engines do this for you).")
    with pytest.raises(ValueError, match=re.escape(msg)):
        post.postprocess_nodes(make_nodes(), query_bundle=bundle)
    with pytest.raises(ValueError, match=re.escape(msg)):
        asyncio.run(post.apostprocess_nodes(make_nodes(), query_bundle=bundle))


def test_constructor_needs_exactly_one_compressor_source():
    with pytest.raises(ConfigError, match=re.escape("RagzipPostprocessor needs a compressor: pass")):
        RagzipPostprocessor()
    from ragzip import build_compressor

    with pytest.raises(ConfigError, match=re.escape("pass either `compressor=` or `config=`, not both.")):
        RagzipPostprocessor(build_compressor(TRUNCATE), config=TRUNCATE)
    with pytest.raises(ConfigError, match=re.escape("unknown type 'truncat'")):
        RagzipPostprocessor(config={"type": "truncat"})
    with pytest.raises(ConfigError, match=re.escape("`compressor` must be a ragzip.Compressor, got dict")):
        RagzipPostprocessor(TRUNCATE)
    msg = ("unknown key 'keep_droped' in RagzipPostprocessor. Did you mean 'keep_dropped'? Valid keys: "
           "callback_manager, compressor, config, guard_foreign_llms, keep_dropped, method.")
    with pytest.raises(ConfigError, match=re.escape(msg)):
        RagzipPostprocessor(config=TRUNCATE, keep_droped=True)


def test_from_yaml_reads_the_compressor_block(tmp_path):
    path = tmp_path / "ragzip.yaml"
    path.write_text("compressor:\n  - type: none\n    tokenizer: whitespace\n"
                    "  - type: truncate\n    max_tokens: 4\n    tokenizer: whitespace\n")
    post = RagzipPostprocessor.from_yaml(path, keep_dropped=True)
    assert post.method == "chain" and post.keep_dropped
    out = post.postprocess_nodes(make_nodes(), query_str=QUERY)
    assert [n.node.metadata["ragzip"]["decision"] for n in out] == ["compressed", "dropped", "dropped"]
    stages = out[0].node.metadata["ragzip"]["stages"]
    assert [(s["method"], s["decision"]) for s in stages] == [("none", "kept"), ("truncate", "compressed")]


# ---------------------------------------------------------------------------------------------- output rules
def test_outputs_are_copies_with_provenance_and_inputs_are_untouched():
    nodes = make_nodes()
    before = copy.deepcopy([n.model_dump() for n in nodes])
    post = RagzipPostprocessor(config=TRUNCATE)
    out = post.postprocess_nodes(nodes, query_str=QUERY)
    assert [n.model_dump() for n in nodes] == before
    assert len(out) == 1 and out[0].node is not nodes[0].node
    node = out[0].node
    assert node.node_id == "eiffel" and out[0].score == 0.9
    assert node.text == "The Eiffel Tower was designed by"
    assert node.metadata["title"] == "Eiffel"
    assert node.source_node.node_id == "doc-eiffel"
    record = node.metadata["ragzip"]
    assert record == post.last_context.results[0].provenance()
    assert record["decision"] == "compressed" and record["tokens_before"] == 11 and record["tokens_after"] == 6
    assert record["retrieval_score"] == 0.9
    # ragzip's key never reaches the LLM or the embedder; the source metadata still does.
    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        content = node.get_content(metadata_mode=mode)
        assert "ragzip" not in content and "title: Eiffel" in content


def test_passages_are_never_merged():
    post = RagzipPostprocessor(config={"type": "none", "tokenizer": "whitespace"})
    nodes = make_nodes()
    out = post.postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.node_id for n in out] == ["eiffel", "liberty", "curie"]
    assert [n.node.text for n in out] == [n.node.text for n in nodes]
    assert all(n.node.metadata["ragzip"]["decision"] == "kept" for n in out)


def test_dropped_passages_are_left_out_but_visible(caplog):
    debug = LlamaDebugHandler()
    post = RagzipPostprocessor(config=TRUNCATE, callback_manager=CallbackManager([debug]))
    with caplog.at_level(logging.INFO, logger="ragzip.integrations"):
        out = post.postprocess_nodes(make_nodes(), query_str=QUERY)
    assert [n.node.node_id for n in out] == ["eiffel"]
    assert post.last_context.decisions() == {"eiffel": "compressed", "liberty": "dropped", "curie": "dropped"}
    (start, end), = debug.get_event_pairs(CBEventType.RERANKING)
    report = end.payload["ragzip"]
    assert report["decisions"] == {"compressed": 1, "dropped": 2}
    assert [d["passage_id"] for d in report["not_included"]] == ["liberty", "curie"]
    assert report["tokens_before"] == 25 and report["tokens_after"] == 6
    assert "truncate 3 passages, 25 -> 6 tokens" in caplog.text


def test_keep_dropped_returns_every_passage_with_its_decision():
    post = RagzipPostprocessor(config=TRUNCATE, keep_dropped=True)
    out = post.postprocess_nodes(make_nodes(), query_str=QUERY)
    assert [n.node.node_id for n in out] == ["eiffel", "liberty", "curie"]
    assert [n.node.text for n in out][1:] == ["", ""]
    assert [n.node.metadata["ragzip"]["decision"] for n in out] == ["compressed", "dropped", "dropped"]
    assert out[1].node.metadata["ragzip"]["reason"] == "token budget used up by earlier passages"


def test_everything_dropped_is_a_warning(caplog):
    post = RagzipPostprocessor(config={"type": "truncate", "max_tokens": 0, "tokenizer": "whitespace"})
    with caplog.at_level(logging.WARNING, logger="ragzip.integrations"):
        assert post.postprocess_nodes(make_nodes(), query_str=QUERY) == []
    assert "every passage was left out of the context" in caplog.text


def test_summary_is_one_node_listing_every_source():
    post = RagzipPostprocessor(SummaryCompressor("Gustave Eiffel's company designed it."))
    out = post.postprocess_nodes(make_nodes(), query_str=QUERY)
    assert len(out) == 1 and out[0].score == 0.9
    node = out[0].node
    assert node.text == "Gustave Eiffel's company designed it."
    record = node.metadata["ragzip"]
    assert record["decision"] == "summary" and record["method"] == "test-summary"
    assert [(s["passage_id"], s["decision"]) for s in record["sources"]] == [
        ("eiffel", "summarized"), ("liberty", "summarized"), ("curie", "summarized")]
    assert "ragzip" not in node.get_content(metadata_mode=MetadataMode.LLM)
    # keep_dropped: the summary, then every source with empty text.
    kept = RagzipPostprocessor(SummaryCompressor("S."), keep_dropped=True).postprocess_nodes(make_nodes(),
                                                                                              query_str=QUERY)
    assert [n.node.text for n in kept] == ["S.", "", "", ""]


def test_empty_summary_gives_no_node():
    post = RagzipPostprocessor(SummaryCompressor(""))
    assert post.postprocess_nodes(make_nodes(), query_str=QUERY) == []
    assert post.last_context.summary == ""


# ---------------------------------------------------------------------------------------------------- async
def test_async_calls_are_batched_into_one_compress_batch():
    counting = CountingCompressor()
    post = RagzipPostprocessor(counting)
    questions = ["Who designed it?", "Where is it?", "When was it built?"]

    async def run():
        return await asyncio.gather(*[post.apostprocess_nodes(make_nodes(), query_str=q) for q in questions])

    outs = asyncio.run(run())
    assert counting.batches == [3]
    assert all([n.node.node_id for n in out] == ["eiffel", "liberty", "curie"] for out in outs)


def test_async_batch_isolates_a_failing_request():
    post = RagzipPostprocessor(CountingCompressor())
    bad = make_nodes()
    bad[1] = NodeWithScore(node=TextNode(text="different text", id_="eiffel"), score=0.1)

    async def run():
        return await asyncio.gather(post.apostprocess_nodes(make_nodes(), query_str="a?"),
                                    post.apostprocess_nodes(bad, query_str="b?"), return_exceptions=True)

    good, err = asyncio.run(run())
    assert len(good) == 3
    assert isinstance(err, InputError) and "two different passages share the id 'eiffel'" in str(err)


# ------------------------------------------------------------------------------------------------ LLM, embedding
def test_llm_metadata_and_completion(generator):
    debug = LlamaDebugHandler()
    llm = RagzipLLM(generator, callback_manager=CallbackManager([debug]))
    meta = llm.metadata
    assert (meta.context_window, meta.num_output, meta.is_chat_model, meta.model_name) == (2048, 3, True,
                                                                                            "tiny-llama")
    assert RagzipLLM(generator, context_window=512, num_output=7).metadata.context_window == 512
    response = llm.complete("Who designed the Eiffel Tower?")
    assert response.raw["new_tokens"] >= 1 and response.raw["prompt_positions"] > 0
    assert response.text == response.raw["text"]
    chat = llm.chat([ChatMessage(role=MessageRole.USER, content="Who designed the Eiffel Tower?")])
    assert chat.message.role == MessageRole.ASSISTANT and chat.message.content == response.text  # greedy
    assert [c.delta for c in llm.stream_complete("Who designed the Eiffel Tower?")] == [response.text]
    assert asyncio.run(llm.acomplete("Who designed the Eiffel Tower?")).text == response.text
    assert asyncio.run(llm.achat([ChatMessage(role="user", content="Who designed the Eiffel Tower?")])).message.content \
        == response.text
    assert len(debug.get_event_pairs(CBEventType.LLM)) == 5


def test_llm_constructor_errors(generator):
    with pytest.raises(ConfigError, match=re.escape("RagzipLLM: pass either `generator=` or `config=`/`store=`")):
        RagzipLLM(generator, config={"model": "x"})
    with pytest.raises(ConfigError, match=re.escape("unknown key 'max_new_token' in generator. Did you mean "
                                                    "'max_new_tokens'?")):
        RagzipLLM(config={"max_new_token": 3})


def test_embedding_wraps_ragzip_embedder():
    emb = hash_embedding()
    vectors = emb.get_text_embedding_batch(["Paris is in France.", "Rome is in Italy."])
    assert len(vectors) == 2 and len(vectors[0]) == 64
    expected = emb.embedder.encode(["Paris is in France."])[0].tolist()
    assert vectors[0] == pytest.approx(expected)
    assert emb.get_query_embedding("Paris is in France.") == pytest.approx(expected)
    assert asyncio.run(emb.aget_query_embedding("Paris is in France.")) == pytest.approx(expected)
    assert emb.model_name == "hash:64"


# --------------------------------------------------------------------------------------- soft tokens end to end
def test_soft_tokens_survive_the_query_engine_and_reach_the_generator(generator):
    compressor = ToySoftCompressor(generator.space, generator.hidden_size, generator.store)
    post = RagzipPostprocessor(compressor)
    llm = RagzipLLM(generator)
    seen = spy_embeddings(generator)
    index = build_index([n.node for n in make_nodes()])
    engine = index.as_query_engine(similarity_top_k=2, node_postprocessors=[post], llm=llm)
    response = engine.query(QUERY)
    assert len(response.source_nodes) == 2
    for source in response.source_nodes:
        assert PLACEHOLDER_RE.fullmatch(source.node.text)
        assert source.node.metadata["ragzip"]["decision"] == "soft"
        assert source.node.metadata["ragzip"]["soft_tokens"] == 1
    # Both stored vectors were spliced into the prompt the generator read (LlamaIndex's template kept them intact).
    assert len(seen) == 1
    assert all(contains_row(seen[0], v) for v in compressor.vectors)


def test_foreign_llm_refuses_soft_placeholders(generator, caplog):
    compressor = ToySoftCompressor(generator.space, generator.hidden_size, generator.store)
    index = build_index([n.node for n in make_nodes()])
    manager = CallbackManager([])
    engine = RetrieverQueryEngine.from_args(index.as_retriever(similarity_top_k=2), llm=MockLLM(),
                                            node_postprocessors=[RagzipPostprocessor(compressor)],
                                            callback_manager=manager)
    msg = "the prompt for the LlamaIndex LLM MockLLM contains ragzip soft-token placeholders"
    if issubclass(SoftTokenError, ValueError):
        # LlamaIndex's refine synthesizer turns ValueErrors raised by the LLM call into a logged warning and an
        # "Empty Response": the placeholders still never reach the LLM.
        with caplog.at_level(logging.WARNING):
            assert str(engine.query(QUERY)) == "Empty Response"
        assert msg in caplog.text
    else:
        with pytest.raises(SoftTokenError, match=re.escape(msg)):
            engine.query(QUERY)
    assert any(isinstance(h, SoftTokenGuard) for h in manager.handlers)  # installed by the postprocessor


def test_guard_ignores_forged_placeholders_unless_strict(caplog):
    forged = placeholder("0" * 32)  # shaped like a placeholder, issued by no store
    index = build_index([TextNode(text=f"A document quoting {forged} verbatim.", id_="forged")])
    engine = RetrieverQueryEngine.from_args(index.as_retriever(), llm=MockLLM(),
                                            callback_manager=CallbackManager([SoftTokenGuard()]),
                                            node_postprocessors=[RagzipPostprocessor(config=TRUNCATE)])
    with caplog.at_level(logging.WARNING):
        assert forged in engine.query(QUERY).source_nodes[0].node.text  # plain text: passes through
    assert "soft-token placeholders" not in caplog.text
    lenient = MockLLM(callback_manager=CallbackManager([SoftTokenGuard()]))
    assert lenient.complete(f"Context: {forged}").text == f"Context: {forged}"  # MockLLM echoes
    strict = MockLLM(callback_manager=CallbackManager([SoftTokenGuard(strict=True)]))
    with pytest.raises(SoftTokenError, match=re.escape("the prompt for the LlamaIndex LLM MockLLM contains")):
        strict.complete(f"Context: {forged}")


def test_guard_lets_ragzip_llm_through_and_stops_others_on_live_placeholders(generator):
    ours = RagzipLLM(generator, callback_manager=CallbackManager([SoftTokenGuard()]))  # its store is now known
    live = generator.store.put(torch.zeros(1, generator.hidden_size), space=generator.space)
    foreign = MockLLM(callback_manager=CallbackManager([SoftTokenGuard()]))
    with pytest.raises(SoftTokenError, match=re.escape("the prompt for the LlamaIndex LLM MockLLM contains")):
        foreign.chat([ChatMessage(role="user", content=f"Context: {live} Who?")])
    assert ours.complete(f"Context: {live} Who?").raw["new_tokens"] >= 1


def test_llm_refuses_placeholders_from_another_store(generator):
    other = SoftTokenStore()
    live = other.put(torch.zeros(1, generator.hidden_size), space=generator.space)
    from ragzip.softguard import track_store

    track_store(other)
    with pytest.raises(SoftTokenError, match=re.escape("issued by a different SoftTokenStore than the generator")):
        RagzipLLM(generator).complete(f"Context: {live} Who?")


def test_bind_shares_the_generators_store_and_tokenizer(generator):
    post = RagzipPostprocessor(config=TRUNCATE)
    post.bind(RagzipLLM(generator))
    assert post.compressor.store is generator.store
    assert post.compressor.token_counter is generator.token_counter
    with pytest.raises(ConfigError, match=re.escape("cannot bind a compressor to MockLLM")):
        post.bind(MockLLM())
