"""LangChain adapters: the document compressor's conventions and rules, ragzip's generator as an LLM and a chat
model, its embedder, the foreign-LLM guard, and soft tokens end to end through LCEL (tiny models, no downloads)."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import re

import pytest

pytest.importorskip("langchain_core")

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
from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.language_models import LLM, BaseChatModel  # noqa: E402
from langchain_core.language_models.fake import FakeListLLM  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeListChatModel  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from ragzip.errors import ConfigError, InputError, SoftTokenError  # noqa: E402
from ragzip.integrations.langchain import (  # noqa: E402
    CUSTOM_EVENT,
    RagzipChatModel,
    RagzipCompressor,
    RagzipEmbeddings,
    RagzipLLM,
    SoftTokenGuard,
    install_soft_token_guard,
)
from ragzip.softstore import SoftTokenStore, placeholder  # noqa: E402


# ------------------------------------------------------------------------------------------------- test helpers
def make_docs() -> list[Document]:
    return [
        Document("The Eiffel Tower was designed by the company of Gustave Eiffel.", id="eiffel",
                 metadata={"title": "Eiffel", "relevance_score": 0.9}),
        Document("The Statue of Liberty was designed by Bartholdi.", id="liberty", metadata={"title": "Liberty"}),
        Document("Marie Curie won two Nobel Prizes.", metadata={"title": "Curie"}),
    ]


@pytest.fixture(scope="module")
def tiny_parts():
    return tiny_causal_lm()


@pytest.fixture()
def generator(tiny_parts):
    return tiny_generator(tiny_parts)


def retriever_of(docs: list[Document]) -> RunnableLambda:
    return RunnableLambda(lambda query: [d.model_copy() for d in docs])


class EventRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def on_custom_event(self, name, data, **kwargs) -> None:
        self.events.append((name, data))


# ------------------------------------------------------------------------------------------------- conventions
def test_classes_follow_langchain_conventions():
    assert BaseDocumentCompressor in RagzipCompressor.__mro__
    assert LLM in RagzipLLM.__mro__
    assert BaseChatModel in RagzipChatModel.__mro__
    assert Embeddings in RagzipEmbeddings.__mro__
    assert RagzipCompressor.model_config["extra"] == "forbid"
    assert RagzipCompressor.model_config["arbitrary_types_allowed"] is True
    assert "acompress_documents" in RagzipCompressor.__dict__  # a real async path, not the executor default


def test_public_names_are_pinned():
    import ragzip.integrations.langchain as module

    assert module.__all__ == ["RagzipChatModel", "RagzipCompressor", "RagzipEmbeddings", "RagzipLLM",
                              "SoftTokenGuard", "format_documents", "install_soft_token_guard", "qa_prompt"]


def test_typos_in_arguments_are_errors_that_name_the_fix():
    msg = ("unknown key 'keep_droped' in RagzipCompressor. Did you mean 'keep_dropped'? Valid keys: compressor, "
           "config, guard_foreign_llms, keep_dropped, max_batch.")
    with pytest.raises(ConfigError, match=re.escape(msg)):
        RagzipCompressor(config=TRUNCATE, keep_droped=True)
    with pytest.raises(ConfigError, match=re.escape("unknown key 'base_compresor' in RagzipCompressor. Did you mean "
                                                    "'compressor'?")):
        RagzipCompressor(config=TRUNCATE, base_compresor=None)
    with pytest.raises(ValidationError, match="keep_droped"):  # pydantic entry points are strict too
        RagzipCompressor.model_validate({"config": TRUNCATE, "keep_droped": True})
    with pytest.raises(ConfigError, match=re.escape("RagzipCompressor needs a compressor: pass")):
        RagzipCompressor()


def test_typo_in_the_retriever_wrapper_is_loud():
    from langchain_classic.retrievers import ContextualCompressionRetriever

    with pytest.raises(ValidationError, match="base_compressor"):
        ContextualCompressionRetriever(base_compresor=RagzipCompressor(config=TRUNCATE),
                                       base_retriever=retriever_of(make_docs()))


def test_empty_documents_give_empty_list():
    comp = RagzipCompressor(config=TRUNCATE)
    assert comp.compress_documents([], QUERY) == []
    assert asyncio.run(comp.acompress_documents([], QUERY)) == []


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_an_error(query):
    comp = RagzipCompressor(config=TRUNCATE)
    msg = "query is empty. Pass the user's question as `query`; ragzip compresses for a question."
    with pytest.raises(InputError, match=re.escape(msg)):
        comp.compress_documents(make_docs(), query)
    with pytest.raises(InputError, match=re.escape(msg)):
        asyncio.run(comp.acompress_documents(make_docs(), query))


def test_from_yaml_reads_the_compressor_block(tmp_path):
    path = tmp_path / "ragzip.yaml"
    path.write_text("compressor:\n  type: truncate\n  max_tokens: 4\n  tokenizer: whitespace\n")
    comp = RagzipCompressor.from_yaml(path, keep_dropped=True)
    out = comp.compress_documents(make_docs(), QUERY)
    assert [d.metadata["ragzip"]["decision"] for d in out] == ["compressed", "dropped", "dropped"]


# ---------------------------------------------------------------------------------------------- output rules
def test_outputs_are_copies_with_provenance_and_inputs_are_untouched():
    docs = make_docs()
    before = copy.deepcopy([d.model_dump() for d in docs])
    comp = RagzipCompressor(config=TRUNCATE)
    out = comp.compress_documents(docs, QUERY)
    assert [d.model_dump() for d in docs] == before
    assert len(out) == 1 and out[0] is not docs[0]
    assert out[0].id == "eiffel" and out[0].page_content == "The Eiffel Tower was designed by"
    assert out[0].metadata["title"] == "Eiffel"
    record = out[0].metadata["ragzip"]
    assert record == comp.last_context.results[0].provenance()
    assert record["decision"] == "compressed" and record["retrieval_score"] == 0.9
    assert record["tokens_before"] == 11 and record["tokens_after"] == 6


def test_passages_are_never_merged_and_ids_are_derived_when_missing():
    comp = RagzipCompressor(config={"type": "none", "tokenizer": "whitespace"})
    out = comp.compress_documents(make_docs(), QUERY)
    assert [d.page_content for d in out] == [d.page_content for d in make_docs()]
    ids = [d.metadata["ragzip"]["passage_id"] for d in out]
    assert ids[:2] == ["eiffel", "liberty"] and len(ids[2]) == 16  # content hash for the id-less document
    assert out[2].id is None  # the copy keeps the input's (missing) id


def test_dropped_documents_are_visible_through_callbacks_and_keep_dropped(caplog):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    recorder = EventRecorder()
    comp = RagzipCompressor(config=TRUNCATE)
    retriever = ContextualCompressionRetriever(base_compressor=comp, base_retriever=retriever_of(make_docs()))
    with caplog.at_level(logging.INFO, logger="ragzip.integrations"):
        out = retriever.invoke(QUERY, config={"callbacks": [recorder]})
    assert [d.id for d in out] == ["eiffel"]
    (name, report), = recorder.events
    assert name == CUSTOM_EVENT
    assert report["decisions"] == {"compressed": 1, "dropped": 2}
    assert [d["decision"] for d in report["not_included"]] == ["dropped", "dropped"]
    assert "truncate 3 passages, 25 -> 6 tokens" in caplog.text
    assert comp.last_context.decisions()["liberty"] == "dropped"
    direct = EventRecorder()  # handlers passed straight to compress_documents get the report too
    comp.compress_documents(make_docs(), QUERY, callbacks=[direct])
    assert [name for name, _ in direct.events] == [CUSTOM_EVENT]
    keep = RagzipCompressor(config=TRUNCATE, keep_dropped=True).compress_documents(make_docs(), QUERY)
    assert [d.page_content for d in keep][1:] == ["", ""]
    assert [d.metadata["ragzip"]["decision"] for d in keep] == ["compressed", "dropped", "dropped"]


def test_async_retriever_dispatches_the_report():
    from langchain_classic.retrievers import ContextualCompressionRetriever

    recorder = EventRecorder()
    retriever = ContextualCompressionRetriever(base_compressor=RagzipCompressor(config=TRUNCATE),
                                               base_retriever=retriever_of(make_docs()))
    out = asyncio.run(retriever.ainvoke(QUERY, config={"callbacks": [recorder]}))
    assert [d.id for d in out] == ["eiffel"]
    assert [name for name, _ in recorder.events] == [CUSTOM_EVENT]


def test_summary_is_one_document_listing_every_source():
    out = RagzipCompressor(SummaryCompressor("Eiffel's company designed it.")).compress_documents(make_docs(), QUERY)
    assert len(out) == 1 and out[0].page_content == "Eiffel's company designed it."
    record = out[0].metadata["ragzip"]
    assert record["decision"] == "summary"
    assert [s["decision"] for s in record["sources"]] == ["summarized"] * 3
    assert [s["passage_id"] for s in record["sources"]][:2] == ["eiffel", "liberty"]
    assert RagzipCompressor(SummaryCompressor("")).compress_documents(make_docs(), QUERY) == []


def test_works_inside_a_document_compressor_pipeline():
    from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline

    pipeline = DocumentCompressorPipeline(transformers=[RagzipCompressor(config={"type": "none",
                                                                                 "tokenizer": "whitespace"}),
                                                        RagzipCompressor(config=TRUNCATE)])
    out = pipeline.compress_documents(make_docs(), QUERY)
    assert [d.page_content for d in out] == ["The Eiffel Tower was designed by"]
    assert out[0].metadata["ragzip"]["decision"] == "compressed"  # the last stage's record
    assert out[0].metadata["ragzip"]["upstream"]["decision"] == "kept"  # and the first stage's, kept beside it


# ---------------------------------------------------------------------------------------------- async, runnable
def test_async_calls_are_batched_into_one_compress_batch():
    counting = CountingCompressor()
    comp = RagzipCompressor(counting)
    questions = ["Who designed it?", "Where is it?", "When was it built?"]

    async def run():
        return await asyncio.gather(*[comp.acompress_documents(make_docs(), q) for q in questions])

    outs = asyncio.run(run())
    assert counting.batches == [3]
    assert all(len(out) == 3 for out in outs)
    runnable = comp.as_runnable()
    results = asyncio.run(runnable.abatch([{"query": q, "documents": make_docs()} for q in questions]))
    assert counting.batches == [3, 3] and all(len(r) == 3 for r in results)


def test_runnable_accepts_dicts_and_pairs():
    runnable = RagzipCompressor(config=TRUNCATE).as_runnable()
    assert runnable.name == "RagzipCompressor"
    by_dict = runnable.invoke({"query": QUERY, "documents": make_docs()})
    by_pair = runnable.invoke((QUERY, make_docs()))
    assert [d.page_content for d in by_dict] == [d.page_content for d in by_pair] == [
        "The Eiffel Tower was designed by"]
    with pytest.raises(InputError, match=re.escape("RagzipCompressor.as_runnable() takes {'query': str, ")):
        runnable.invoke("just a string")


# ------------------------------------------------------------------------------------------- LLMs, embeddings
def test_llm_and_chat_model_over_the_generator(generator):
    llm = RagzipLLM(generator)
    chat = RagzipChatModel(generator)
    text = llm.invoke(QUERY)
    message = chat.invoke(QUERY)
    assert text == message.content  # both send one user turn through the chat template, greedy
    assert message.usage_metadata["output_tokens"] >= 1 and message.usage_metadata["input_tokens"] > 0
    assert message.response_metadata["model_name"] == "tiny-llama"
    assert {"ttft_s", "total_s", "finish_reason"} <= set(message.response_metadata)
    assert llm.batch([QUERY, QUERY]) == [text, text]
    assert asyncio.run(chat.ainvoke(QUERY)).content == text
    raw = RagzipLLM(generator, use_chat_template=False)
    assert isinstance(raw.invoke(QUERY), str)
    assert llm._llm_type == "ragzip" and chat._llm_type == "ragzip-chat"
    assert llm._identifying_params["model_name"] == "tiny-llama"
    with pytest.raises(ConfigError, match=re.escape("unknown key 'use_chat_templat' in RagzipLLM. Did you mean "
                                                    "'use_chat_template'?")):
        RagzipLLM(generator, use_chat_templat=False)


def test_embeddings_wrap_ragzip_embedder():
    from ragzip.embed import Embedder

    emb = RagzipEmbeddings(Embedder("hash:64"))
    vectors = emb.embed_documents(["Paris is in France.", "Rome is in Italy."])
    assert len(vectors) == 2 and len(vectors[0]) == 64
    assert emb.embed_query("Paris is in France.") == pytest.approx(vectors[0])
    assert asyncio.run(emb.aembed_documents(["Paris is in France."]))[0] == pytest.approx(vectors[0])
    assert emb.embed_documents([]) == []


# --------------------------------------------------------------------------------------- soft tokens end to end
def test_soft_tokens_survive_lcel_and_reach_the_generator(generator):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    compressor = ToySoftCompressor(generator.space, generator.hidden_size, generator.store)
    retriever = ContextualCompressionRetriever(base_compressor=RagzipCompressor(compressor),
                                               base_retriever=retriever_of(make_docs()[:2]))
    chat = RagzipChatModel(generator)
    seen = spy_embeddings(generator)
    prompt = ChatPromptTemplate.from_messages([("system", "Answer from the context."),
                                               ("human", "Context:\n{context}\n\nQuestion: {question}")])
    chain = ({"context": retriever | (lambda docs: "\n\n".join(d.page_content for d in docs)),
              "question": lambda q: q} | prompt | chat | StrOutputParser())
    assert isinstance(chain.invoke(QUERY), str)
    assert len(seen) == 1 and all(contains_row(seen[0], v) for v in compressor.vectors)
    # The plain-LLM path and a string template keep the placeholders as well.
    docs = retriever.invoke(QUERY)
    assert all(d.metadata["ragzip"]["decision"] == "soft" for d in docs)
    llm_chain = PromptTemplate.from_template("Context: {context}\nQ: {question}") | RagzipLLM(generator)
    llm_chain.invoke({"context": " ".join(d.page_content for d in docs), "question": QUERY})
    assert len(seen) == 2 and all(contains_row(seen[1], v) for v in compressor.vectors[-2:])


def test_foreign_models_refuse_live_placeholders(generator):
    compressor = ToySoftCompressor(generator.space, generator.hidden_size, generator.store)
    RagzipCompressor(compressor)  # a soft compressor in a LangChain adapter installs the guard process-wide
    live = compressor.compress(QUERY, ["The Eiffel Tower."]).text
    prompt = ChatPromptTemplate.from_messages([("human", "Context: {context}\nQuestion: {question}")])
    chain = prompt | FakeListChatModel(responses=["Eiffel"]) | StrOutputParser()
    with pytest.raises(SoftTokenError, match=re.escape("the prompt for the LangChain chat model FakeListChatModel "
                                                       "contains ragzip soft-token placeholders")):
        chain.invoke({"context": live, "question": QUERY})
    with pytest.raises(SoftTokenError, match=re.escape("the prompt for the LangChain LLM FakeListLLM contains")):
        FakeListLLM(responses=["Eiffel"]).invoke(f"Context: {live}")
    with pytest.raises(SoftTokenError):
        asyncio.run(chain.ainvoke({"context": live, "question": QUERY}))
    # ragzip's own models read them; forged placeholder text is plain text for everyone.
    assert isinstance((prompt | RagzipChatModel(generator)).invoke({"context": live, "question": QUERY}).content, str)
    forged = placeholder("0" * 32)
    assert chain.invoke({"context": forged, "question": QUERY}) == "Eiffel"
    # The guard can be switched off in a context, or used strictly per call.
    var = install_soft_token_guard()
    ctx = contextvars.copy_context()
    ctx.run(var.set, None)
    assert ctx.run(chain.invoke, {"context": live, "question": QUERY}) == "Eiffel"
    strict = FakeListLLM(responses=["x"])
    with pytest.raises(SoftTokenError):
        strict.invoke(f"Context: {forged}", config={"callbacks": [SoftTokenGuard(strict=True)]})


def test_chat_model_refuses_placeholders_from_another_store(generator):
    other = SoftTokenStore()
    RagzipCompressor(ToySoftCompressor(generator.space, generator.hidden_size, other))  # tracks `other`
    live = other.put(torch.zeros(1, generator.hidden_size), space=generator.space)
    with pytest.raises(SoftTokenError, match=re.escape("issued by a different SoftTokenStore than the generator")):
        RagzipChatModel(generator).invoke(f"Context: {live} Who?")


def test_bind_shares_the_generators_store(generator):
    comp = RagzipCompressor(config=TRUNCATE).bind(RagzipChatModel(generator))
    assert comp.compressor.store is generator.store
    with pytest.raises(ConfigError, match=re.escape("cannot bind a compressor to FakeListLLM")):
        comp.bind(FakeListLLM(responses=["x"]))
