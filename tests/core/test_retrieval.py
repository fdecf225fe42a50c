"""Embedder, FAISS retriever, saved indexes (integrity, mismatches) and the retriever config.

Mechanics run on the model-free ``hash:<dim>`` embedder; one test runs the real MiniLM on the demo corpus.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources

import numpy as np
import pytest

from ragzip import ConfigError, IndexCorruptError, InputError, Passage
from ragzip.config_utils import from_dict
from ragzip.embed import Embedder, HashEmbeddingModel
from ragzip.retrieval import FaissRetriever, RetrieverConfig, _to_device, index_files, set_num_threads

DOCS = [
    Passage("Paris is the capital of France and lies on the Seine.", id="paris", metadata={"title": "Paris"}),
    Passage("Berlin is the capital of Germany.", id="berlin", metadata={"title": "Berlin", "year": 1237}),
    Passage("The Nile flows north into the Mediterranean Sea.", id="nile"),
    Passage("Python is a programming language created by Guido van Rossum.", id="python"),
]


@pytest.fixture(scope="module")
def embedder():
    return Embedder("hash:128")


@pytest.fixture(scope="module")
def retriever(embedder):
    return FaissRetriever.build(DOCS, embedder)


@pytest.fixture()
def saved(tmp_path, retriever):
    path = tmp_path / "index"
    retriever.save(path)
    return path


# --- embedder ---------------------------------------------------------------------------------------------------------


def test_hash_embedder_is_normalised_and_deterministic(embedder):
    vectors = embedder.encode(["Paris is in France.", "paris IS in france", ""])
    assert vectors.shape == (3, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(vectors[0], vectors[1])  # case-insensitive words
    assert not vectors[2].any()  # no words: the zero vector, not NaN
    np.testing.assert_array_equal(embedder.encode_query("Paris is in France."), vectors[0])
    assert embedder.encode([]).shape == (0, 128)


def test_embedder_with_injected_model_normalises_its_output():
    class Fake:  # no dimension getter: the embedder probes it
        def encode(self, texts, batch_size=32, **kwargs):
            return np.array([[3.0, 4.0] for _ in texts])

    embedder = Embedder("fake", model=Fake())
    assert embedder.name == "fake" and embedder.dim == 2
    np.testing.assert_allclose(embedder.encode(["x"]), [[0.6, 0.8]], rtol=1e-6)


@pytest.mark.parametrize(("call", "msg"), [
    (lambda e: e.encode("one string"), "Embedder.encode takes a list of texts, not one string."),
    (lambda e: e.encode(["ok", 3]), "text #1 to embed must be a str, got int."),
    (lambda e: e.encode_query(b"x"), "query must be a str, got bytes."),
])
def test_embedder_input_errors(embedder, call, msg):
    with pytest.raises(InputError, match=re.escape(msg)):
        call(embedder)


@pytest.mark.parametrize(("spec", "msg"), [
    ("hash:abc", "embedder 'hash:abc' is not a valid hash spec; write `hash:<dim>` with an integer dim, e.g. `hash:256`."),
    ("hash:1", "hash embedder dim = 1 must be an integer >= 2, e.g. `hash:256`."),
    ("", "embedder = '' must be a model spec such as 'embedded:minilm'"),
])
def test_bad_embedder_specs(spec, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)):
        Embedder(spec)


# --- build and search -------------------------------------------------------------------------------------------------


def test_search_returns_scored_copies_with_stored_embeddings(retriever, embedder):
    hits = retriever.search("What is the capital of France?", top_k=3)
    assert [h.id for h in hits][0] == "paris" and len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0]
    assert dict(top.metadata) == {"title": "Paris", "embedder": "hash:128"} and top.text == DOCS[0].text
    np.testing.assert_allclose(top.embedding, embedder.encode([DOCS[0].text])[0], rtol=1e-6)
    assert top.embedding.dtype == np.float32 and top.embedding.shape == (128,)
    np.testing.assert_allclose(top.score, float(embedder.encode_query("What is the capital of France?") @ top.embedding),
                               rtol=1e-5)
    np.testing.assert_array_equal(retriever.embedding("paris"), top.embedding)
    assert retriever.passages[0].score is None and retriever.passages[0].embedding is None  # stored copies untouched


def test_search_batch_matches_single_searches_and_clips_top_k(retriever):
    queries = ["capital of Germany", "river flowing into the sea", "programming language"]
    batch = retriever.search_batch(queries, top_k=10)
    assert all(len(hits) == len(DOCS) for hits in batch)  # top_k larger than the index: all passages
    for query, hits in zip(queries, batch, strict=True):
        single = retriever.search(query, top_k=10)
        assert [h.id for h in hits] == [h.id for h in single]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in single], rtol=1e-6)
    assert [hits[0].id for hits in batch] == ["berlin", "nile", "python"]
    assert retriever.search_batch([]) == []
    assert len(retriever.search("capital")) == 4 and retriever.top_k == 5


@pytest.mark.parametrize("top_k", [0, -1, True, 2.0])
def test_bad_top_k(retriever, top_k):
    msg = f"top_k = {top_k!r} must be a positive integer (passages to return), e.g. 5."
    with pytest.raises(InputError, match=re.escape(msg)):
        retriever.search("capital", top_k=top_k)


def test_empty_query_and_unknown_passage(retriever):
    with pytest.raises(InputError, match=re.escape("query is empty.")):
        retriever.search("   ")
    with pytest.raises(InputError, match=re.escape("search_batch takes a list of queries, not one string.")):
        retriever.search_batch("capital")
    with pytest.raises(KeyError, match=re.escape("no passage with id 'rome' in this index (4 passages).")):
        retriever.embedding("rome")


def test_build_errors(embedder):
    with pytest.raises(InputError, match=re.escape("no passages to index. Give at least one passage with text.")):
        FaissRetriever.build([], embedder)
    with pytest.raises(InputError, match=re.escape("duplicate passage id 'a' (#0 and #2). An index needs unique ids")):
        FaissRetriever.build([Passage("x", id="a"), Passage("y", id="b"), Passage("z", id="a")], embedder)
    with pytest.raises(InputError, match=re.escape("passage #0 must be a ragzip.Passage, got str")):
        FaissRetriever.build(["text"], embedder)
    with pytest.raises(InputError, match=re.escape("no passages to index (1 given, all empty).")):
        FaissRetriever.build([Passage(" ", id="a")], embedder)


def test_build_skips_empty_passages_visibly(embedder, caplog):
    with caplog.at_level(logging.WARNING, logger="ragzip.retrieval"):
        retriever = FaissRetriever.build([Passage("Some text.", id="a"), Passage("\n", id="blank")], embedder)
    assert len(retriever) == 1
    assert retriever.stats["skipped_empty"] == 1 and retriever.stats["skipped_empty_ids"] == ["blank"]
    assert "skipped 1 empty or whitespace-only passage(s): ['blank']" in caplog.text


def test_long_passages_warn_that_only_their_start_is_embedded(caplog):
    embedder = Embedder("hash:16")
    embedder.max_seq_length = 5
    with caplog.at_level(logging.WARNING, logger="ragzip.retrieval"):
        FaissRetriever.build([Passage("one two three four five six", id="long"), Passage("short", id="s")], embedder)
    assert "1 passage(s) have more than 5 words, beyond what hash:16 reads (5 tokens)" in caplog.text


# --- save and load ----------------------------------------------------------------------------------------------------


def test_save_load_round_trip(saved, retriever, embedder):
    assert sorted(p.name for p in saved.parent.iterdir()) == ["index"]  # no temporary folders left behind
    version = index_files(saved)
    assert sorted(p.name for p in saved.iterdir()) == [".lock", ".ragzip", "CURRENT", version.name]
    meta = json.loads((version / "meta.json").read_text())
    assert (meta["embedder"], meta["dim"], meta["count"], meta["metric"]) == ("hash:128", 128, 4, "inner_product")
    assert set(meta["files"]) == {"index.faiss", "passages.jsonl"} and len(meta["files"]["index.faiss"]["sha256"]) == 64
    assert meta["ragzip_version"] and meta["stats"]["passages"] == 4
    loaded = FaissRetriever.load(saved, embedder=embedder)
    assert (loaded.embedder_name, loaded.dim, len(loaded)) == ("hash:128", 128, 4)
    for query in ["capital of France", "Guido"]:
        a, b = retriever.search(query), loaded.search(query)
        assert [(h.id, dict(h.metadata)) for h in a] == [(h.id, dict(h.metadata)) for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-6)


def test_load_without_embedder_builds_it_from_the_saved_name(saved):
    loaded = FaissRetriever.load(saved)
    assert loaded.search("Berlin Germany", top_k=1)[0].id == "berlin" and loaded.embedder.name == "hash:128"


def test_save_replaces_an_index_but_never_other_folders(tmp_path, saved, embedder):
    FaissRetriever.build(DOCS[:2], embedder).save(saved)
    assert len(FaissRetriever.load(saved)) == 2
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    msg = f"cannot save the index to {str(other)!r}: it exists and is not a ragzip index folder."
    with pytest.raises(InputError, match=re.escape(msg)):
        FaissRetriever.build(DOCS, embedder).save(other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_unserialisable_metadata_is_an_error_and_leaves_nothing(tmp_path, embedder):
    retriever = FaissRetriever.build([Passage("x", id="a", metadata={"obj": object()})], embedder)
    with pytest.raises(InputError, match=re.escape("passage 'a': metadata is not JSON-serialisable")):
        retriever.save(tmp_path / "index")
    assert list(tmp_path.iterdir()) == []


def _corrupt_truncate(saved):
    path = index_files(saved)
    data = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes(data[: len(data) // 2])


def _corrupt_garbage(saved):
    path = index_files(saved)
    size = (path / "index.faiss").stat().st_size
    (path / "index.faiss").write_bytes(b"\x00garbage" * (size // 8) + b"\x00" * (size % 8))


def _corrupt_passages(saved):
    path = index_files(saved)
    text = (path / "passages.jsonl").read_text()
    (path / "passages.jsonl").write_text(text.replace("Paris", "Rome"))


@pytest.mark.parametrize(("corrupt", "fname"), [
    (_corrupt_truncate, "index.faiss"), (_corrupt_garbage, "index.faiss"), (_corrupt_passages, "passages.jsonl"),
])
def test_corrupted_files_are_detected_by_sha256(saved, corrupt, fname):
    corrupt(saved)
    msg = f"{index_files(saved) / fname} is corrupted: its sha256 "
    with pytest.raises(IndexCorruptError, match=re.escape(msg)) as err:
        FaissRetriever.load(saved)
    assert "it was truncated or modified. Rebuild it: `ragzip index --corpus FILE --out DIR`" in str(err.value)


def _rewrite(saved, fname, data):
    path = index_files(saved)
    (path / fname).write_bytes(data)
    meta = json.loads((path / "meta.json").read_text())
    import hashlib

    meta["files"][fname] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (path / "meta.json").write_text(json.dumps(meta))


def test_unreadable_index_with_matching_checksum(saved):
    _rewrite(saved, "index.faiss", b"not a faiss index at all")
    with pytest.raises(IndexCorruptError, match=re.escape(f"{index_files(saved) / 'index.faiss'} cannot be read by faiss")):
        FaissRetriever.load(saved)


def test_inconsistent_counts(saved):
    lines = (index_files(saved) / "passages.jsonl").read_bytes().splitlines(keepends=True)
    _rewrite(saved, "passages.jsonl", b"".join(lines[:-1]))
    msg = (f"{index_files(saved)} is inconsistent: meta.json says 4 vectors of dim 128, the index has 4 of dim 128, "
           "passages.jsonl has 3 rows.")
    with pytest.raises(IndexCorruptError, match=re.escape(msg)):
        FaissRetriever.load(saved)


def test_missing_or_unreadable_meta(saved, tmp_path):
    version = index_files(saved)
    (version / "meta.json").write_text("{not json")
    with pytest.raises(IndexCorruptError, match=re.escape(f"{version / 'meta.json'} is unreadable (JSONDecodeError")):
        FaissRetriever.load(saved)
    (version / "meta.json").unlink()
    msg = f"{version} has no meta.json, so it is not a complete ragzip index"
    with pytest.raises(IndexCorruptError, match=re.escape(msg)):
        FaissRetriever.load(saved)
    with pytest.raises(ConfigError, match=re.escape(f"no saved index at {str(tmp_path / 'nope')!r} (not a folder).")):
        FaissRetriever.load(tmp_path / "nope")


def test_missing_index_file(saved):
    (index_files(saved) / "index.faiss").unlink()
    with pytest.raises(IndexCorruptError, match=re.escape(f"{index_files(saved) / 'index.faiss'} is missing.")):
        FaissRetriever.load(saved)


def test_embedder_mismatch_on_load(saved):
    msg = (f"{saved} was built with embedder 'hash:128' (dim 128) but the query embedder is 'hash:64' (dim 64). "
           "Queries must be embedded by the model that embedded the passages: use Embedder('hash:128') "
           "(retriever.embedder: hash:128), or rebuild the index with 'hash:64'.")
    with pytest.raises(ConfigError, match=re.escape(msg)):
        FaissRetriever.load(saved, embedder=Embedder("hash:64"))


# --- corpus, config -----------------------------------------------------------------------------------------------


def _corpus_file(tmp_path):
    f = tmp_path / "corpus.jsonl"
    rows = [{"id": p.id, "text": p.text, **p.metadata} for p in DOCS] + [{"id": "empty", "text": ""}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return f


def test_from_corpus_chunks_and_records_stats(tmp_path, embedder):
    retriever = FaissRetriever.from_corpus(_corpus_file(tmp_path), embedder, chunk_words=6, chunk_overlap=2)
    ids = [p.id for p in retriever.passages]
    assert ids[:2] == ["paris#0", "paris#1"] and "berlin#0" in ids
    hit = retriever.search("capital of Germany", top_k=1)[0]
    assert hit.metadata["doc_id"] == "berlin" and hit.metadata["year"] == 1237 and hit.metadata["chunk_index"] == 0
    stats = retriever.stats
    assert (stats["documents"], stats["kept"], stats["skipped_empty"], stats["chunks"]) == (5, 4, 1, len(ids))
    assert stats["skipped_empty_ids"] == ["empty"] and stats["chunk_words"] == 6


def test_config_checks():
    cfg = RetrieverConfig()
    assert (cfg.type, cfg.embedder, cfg.top_k, cfg.chunk_words, cfg.chunk_overlap) == ("faiss", "embedded:minilm", 5,
                                                                                       120, 20)
    cases = [
        ({"top_k": 0}, "retriever.top_k = 0 is out of range; it must lie in [1, inf]."),
        ({"top_k": "5"}, "retriever.top_k = '5' must be an integer."),
        ({"chunk_overlap": 120}, "retriever.chunk_overlap = 120 must lie in [0, chunk_words) = [0, 120)."),
        ({"type": "bm25"}, "retriever.type = 'bm25' is not allowed; choose one of 'faiss'."),
        ({"topk": 3}, "unknown key 'topk' in retriever. Did you mean 'top_k'?"),
        ({"num_threads": 0}, "retriever.num_threads = 0 is out of range"),
    ]
    for data, msg in cases:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            RetrieverConfig.from_dict(data)
    assert from_dict(RetrieverConfig, {"top_k": 3}, where="retriever").top_k == 3


def test_from_config_builds_saves_then_loads(tmp_path, monkeypatch, caplog):
    corpus = _corpus_file(tmp_path)
    cfg = RetrieverConfig(embedder="hash:128", corpus=str(corpus), index_path=str(tmp_path / "idx"), top_k=2,
                          chunk_words=50)
    built = FaissRetriever.from_config(cfg)
    assert (index_files(tmp_path / "idx") / "meta.json").exists() and built.top_k == 2
    monkeypatch.setattr(FaissRetriever, "from_corpus", lambda *a, **k: pytest.fail("must load, not rebuild"))
    loaded = FaissRetriever.from_config(cfg)
    assert [h.id for h in loaded.search("Nile")] == [h.id for h in built.search("Nile")] and len(loaded.search("x")) == 2
    with caplog.at_level(logging.WARNING, logger="ragzip.retrieval"):
        FaissRetriever.from_config(RetrieverConfig(embedder="hash:128", corpus=str(corpus),
                                                   index_path=str(tmp_path / "idx"), chunk_words=60))
    assert "although chunk_words 50 -> 60 since it was built; delete the folder to rebuild it" in caplog.text
    msg = ("the index at {} was built with embedder 'hash:128', but the config names 'hash:32'. Set "
           "retriever.embedder: hash:128, or rebuild the index").format(tmp_path / "idx")
    with pytest.raises(ConfigError, match=re.escape(msg)):
        FaissRetriever.from_config(RetrieverConfig(embedder="hash:32", index_path=str(tmp_path / "idx")))


def test_from_config_incomplete_index_folder_is_not_rebuilt_over(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "index.faiss").write_bytes(b"half")
    cfg = RetrieverConfig(embedder="hash:128", corpus=str(_corpus_file(tmp_path)), index_path=str(tmp_path / "idx"))
    with pytest.raises(IndexCorruptError, match=re.escape("has no meta.json")):
        FaissRetriever.from_config(cfg)


def test_from_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("the retriever needs documents: set retriever.corpus")):
        FaissRetriever.from_config(RetrieverConfig(embedder="hash:8"))
    msg = f"retriever.index_path = {str(tmp_path / 'x')!r} holds no saved index and retriever.corpus is not set."
    with pytest.raises(ConfigError, match=re.escape(msg)):
        FaissRetriever.from_config(RetrieverConfig(embedder="hash:8", index_path=str(tmp_path / "x")))
    msg = "retriever.embedder is 'hash:8' but the embedder passed in is 'hash:16'."
    with pytest.raises(ConfigError, match=re.escape(msg)):
        FaissRetriever.from_config(RetrieverConfig(embedder="hash:8", corpus="c.jsonl"), embedder=Embedder("hash:16"))


def test_threads_and_device_fallback(retriever, caplog):
    import faiss

    before = faiss.omp_get_max_threads()
    try:
        assert set_num_threads(1) == 1 and faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)
    index = retriever._cpu_index
    assert _to_device(index, "cpu") == (index, None)
    if not hasattr(faiss, "StandardGpuResources"):
        with caplog.at_level(logging.WARNING, logger="ragzip.retrieval"):
            assert _to_device(index, "cuda") == (index, None)
        assert "device 'cuda' asked for, but this faiss has no GPU support; searching on the CPU" in caplog.text


def test_hash_model_is_stable_across_processes():
    # BLAKE2b, not Python's salted hash(): a saved hash-embedder index stays searchable in a new process.
    # The values are pinned: changing the hashing would make saved hash-embedder indexes silently wrong.
    assert HashEmbeddingModel(8).encode(["stable words"])[0].tolist() == [0.0, -1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0]


# --- the real embedder ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~3 s on an idle 2-core CPU (import + load + 54 texts), far more when the machine is shared
def test_minilm_finds_the_gold_passage_of_every_demo_question():
    data = resources.files("ragzip") / "demo"
    from ragzip.corpus import load_corpus

    retriever = FaissRetriever.build(load_corpus(str(data / "demo_corpus.jsonl")), Embedder("embedded:minilm"))
    questions = [json.loads(line) for line in (data / "demo_questions.jsonl").read_text(encoding="utf-8").splitlines()]
    results = retriever.search_batch([q["question"] for q in questions], top_k=5)
    missed = [q["question"] for q, hits in zip(questions, results, strict=True) if q["gold_ids"][0] not in [h.id for h in hits]]
    assert missed == []
    assert retriever.dim == 384 and results[0][0].embedding.shape == (384,)
