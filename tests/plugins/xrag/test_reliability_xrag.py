"""xRAG reuses only embeddings whose embedder is named and matches its projector's.

Unchecked, any vector of the right width would feed the projector: an index built by another embedder, or a
LlamaIndex node's embedding, would give wrong soft tokens with no warning.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from ragzip import InputError, Passage, build_compressor
from ragzip.embed import Embedder
from ragzip.plugins.xrag import ProjectorConfig, XRAGProjector
from ragzip.retrieval import FaissRetriever

TEXTS = ["Paris is the capital of France.", "Berlin is in Germany.", "Rome is old."]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(1)
    projector = XRAGProjector(ProjectorConfig(embedder="hash:16", embedder_dim=16, generator="embedded:smollm2-135m",
                                              generator_hidden=32)).eval()
    return projector.save_pretrained(tmp_path_factory.mktemp("xrag") / "projector")


def xrag(artifact, **config):
    return build_compressor({"type": "xrag", "artifact": str(artifact), "tokenizer": "whitespace", **config})


def test_faiss_hits_name_their_embedder_and_the_index_records_it(tmp_path) -> None:
    retriever = FaissRetriever.build([Passage(t) for t in TEXTS], Embedder("hash:16"))
    hit = retriever.search("capital of France", top_k=1)[0]
    assert hit.metadata["embedder"] == "hash:16" and hit.embedding is not None
    retriever.save(tmp_path / "idx")
    loaded = FaissRetriever.load(tmp_path / "idx")
    assert loaded.embedder_info == {"name": "hash:16", "dim": 16, "normalized": True}


def test_hits_of_the_projectors_embedder_are_reused(artifact) -> None:
    hits = FaissRetriever.build([Passage(t) for t in TEXTS], Embedder("hash:16")).search("France", top_k=3)
    ctx = xrag(artifact).compress("q?", hits)
    assert [r.provenance()["embedding"] for r in ctx.results] == ["index"] * 3


def test_unlabelled_embedding_of_the_right_width_is_reencoded_not_trusted(artifact) -> None:
    # e.g. a LlamaIndex node's embedding, or an index built by an unknown embedder: right width, wrong space
    garbage = np.ones(16, dtype=np.float32) / 4.0
    ctx = xrag(artifact).compress("q?", [Passage(TEXTS[0], embedding=garbage)])
    assert [r.provenance()["embedding"] for r in ctx.results] == ["encoded"]
    with pytest.raises(InputError, match=re.escape(
            "passage 'p0' has an embedding of unknown origin (no 'embedder' in its metadata naming the embedder that "
            "made it), and compressor[xrag].reencode is false.")):
        xrag(artifact, reencode=False).compress("q?", [Passage(TEXTS[0], id="p0", embedding=garbage)])


def test_embedding_labelled_by_another_embedder_is_reencoded_or_refused(artifact) -> None:
    other = Passage(TEXTS[0], id="p0", metadata={"embedder": "hash:384-lookalike"},
                    embedding=np.ones(16, dtype=np.float32) / 4.0)
    assert xrag(artifact).compress("q?", [other]).results[0].provenance()["embedding"] == "encoded"
    with pytest.raises(InputError, match=re.escape("passage 'p0' was embedded by 'hash:384-lookalike', not "
                                                   "'hash:16', and compressor[xrag].reencode is false.")):
        xrag(artifact, reencode=False).compress("q?", [other])
