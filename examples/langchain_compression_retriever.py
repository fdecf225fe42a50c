"""A LangChain ContextualCompressionRetriever over a FAISS vector store, with ragzip as the document compressor,
feeding an LCEL chain that answers with ragzip's local chat model.

Runs offline on ragzip's embedded models (MiniLM embeddings, the trained extractive classifier, SmolLM2-135M answers):

    pip install 'ragzip[langchain]'
    python examples/langchain_compression_retriever.py                            # extractive (examples/ragzip.yaml)
    python examples/langchain_compression_retriever.py examples/ragzip-chain.yaml # extractive, then a token budget
    python examples/langchain_compression_retriever.py examples/ragzip-xrag.yaml  # soft tokens (xRAG)

The compressor comes from the YAML's ``compressor:`` block, the chat model from its ``generator:`` block and the
embedder and ``top_k`` from its ``retriever:`` block. The documents are ragzip's demo corpus, chunked as the YAML says.
For every question it prints the answer, then what the chat model read: each passage's decision and the kept
sentences with their classifier scores (from ``doc.metadata["ragzip"]``, which also holds each sentence's span).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from importlib import resources
from pathlib import Path

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnablePassthrough

from ragzip import chunk_passages, load_config, load_corpus
from ragzip.integrations.langchain import RagzipChatModel, RagzipCompressor, RagzipEmbeddings, qa_prompt

with warnings.catch_warnings():  # "langchain-community is being sunset": its FAISS store still works
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy

QUESTIONS = [
    "For the World's Fair of which year was the Eiffel Tower built?",
    "Who reached the summit of Mount Everest with Edmund Hillary in 1953?",
]


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"{d.metadata.get('title', '')}: {d.page_content}" for d in docs)


def main(config_path: Path) -> None:
    start = time.perf_counter()
    cfg = load_config(config_path)
    embeddings = RagzipEmbeddings(spec=cfg.retriever.embedder)
    chat = RagzipChatModel.from_yaml(config_path)

    corpus = load_corpus(resources.files("ragzip") / "demo" / "demo_corpus.jsonl")
    chunks = chunk_passages(corpus, cfg.retriever.chunk_words, cfg.retriever.chunk_overlap)
    documents = [Document(page_content=p.text, metadata=dict(p.metadata), id=p.id) for p in chunks]
    # MiniLM vectors are L2-normalised, so inner product is cosine similarity.
    vector_store = FAISS.from_documents(documents, embeddings, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)

    # `llm=` binds the compressor to the generator: it counts the generator's tokens and shares its soft-token store.
    compressor = RagzipCompressor.from_yaml(config_path, llm=chat)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor,
        base_retriever=vector_store.as_retriever(search_kwargs={"k": cfg.retriever.top_k}),
    )
    # Ask with ragzip's answer prompt (tuned for short answers from a small reader).
    chain = ({"context": retriever | format_docs, "question": RunnablePassthrough()}
             | qa_prompt(config_path) | chat | StrOutputParser())
    print(f"indexed {len(documents)} chunks into FAISS with {cfg.retriever.embedder}; "
          f"compressor {compressor.compressor.name}; chat model {chat.generator.config.model}; "
          f"setup {time.perf_counter() - start:.1f} s")

    for question in QUESTIONS:
        t0 = time.perf_counter()
        answer = chain.invoke(question)
        context = compressor.last_context
        print(f"\nQ: {question}")
        print(f"A: {answer.strip()}")
        print(f"   context tokens {context.tokens_before} -> {context.tokens_after} "
              f"({context.compression_ratio:.1f}x), compress {context.compress_s * 1000:.1f} ms, "
              f"chain {time.perf_counter() - t0:.1f} s")
        print(context.explain(indent="   "))

    # The compressor is also a Runnable over (query, documents), and batches concurrent async calls.
    docs = vector_store.similarity_search(QUESTIONS[0], k=cfg.retriever.top_k)
    kept = compressor.as_runnable().invoke({"query": QUESTIONS[0], "documents": docs})
    record = kept[0].metadata["ragzip"] if kept else {}
    print(f"\nas a Runnable: {len(docs)} documents in, {len(kept)} out; first one's provenance: "
          f"{ {k: record.get(k) for k in ('passage_id', 'decision', 'tokens_before', 'tokens_after')} }")
    for unit in record.get("units", []):
        if unit["kept"]:  # the sentence, its score, and where it is in the document (to highlight and cite)
            print(f"   kept {unit['score']:.3f} [{unit['start']}:{unit['end']}] {unit['text']}")
    print(f"\ndone in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("ragzip.yaml"))
