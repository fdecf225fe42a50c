"""Core types, the compressor contract and chains, on the built-in baselines (no models needed)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import ragzip
from ragzip import InputError, Passage, build_compressor
from ragzip.errors import ConfigError


def truncate(n: int, counter):
    return build_compressor({"type": "truncate", "max_tokens": n}, token_counter=counter)


def test_public_names_are_pinned():
    assert ragzip.__all__ == sorted(ragzip.__all__)
    assert set(ragzip.__all__) == {
        "Answer", "ChainCompressor", "CompressedContext", "Compressor", "CompressorConfig", "ConfigError",
        "IndexCorruptError", "InputError", "MissingDependencyError", "ModelNotFoundError", "Passage", "PassageResult",
        "RAGPipeline", "RagzipConfig", "RagzipError", "SoftSegment", "SoftTokenError", "SoftTokenStore", "StageResult",
        "Unit", "__version__", "build_compressor", "chunk_passages", "default_store", "load_config", "load_corpus",
        "quiet_dependencies", "register_compressor", "registered_compressors",
    }
    for name in ragzip.__all__:
        assert getattr(ragzip, name) is not None


def test_passage_copies_metadata_and_derives_id():
    meta = {"title": "T"}
    p = Passage("some text", metadata=meta, embedding=[1, 2, 3])
    meta["title"] = "changed"
    assert p.metadata["title"] == "T"
    assert p.id == ragzip.types.content_id("some text")
    assert p.embedding.dtype == np.float32 and not p.embedding.flags.writeable
    with pytest.raises(TypeError):
        p.metadata["x"] = 1  # read-only view


def test_non_utf8_bytes_error_says_how_to_decode():
    with pytest.raises(InputError, match=re.escape("passage is not valid UTF-8 (byte 3: b'\\xff")):
        Passage(b"abc\xff\xfe")
    assert Passage("caf\u00e9".encode()).text == "caf\u00e9"


def test_none_keeps_everything_and_counts_tokens(words):
    out = build_compressor({"type": "none"}, token_counter=words).compress("q?", ["a b c", "d e"])
    assert out.text == "a b c\n\nd e"
    assert [r.decision for r in out.results] == ["kept", "kept"]
    assert (out.tokens_before, out.tokens_after, out.compression_ratio) == (5, 5, 1.0)


def test_truncate_cuts_at_budget_and_reports_every_passage(words):
    out = truncate(4, words).compress("q?", ["a b c", "d e f", "g h"])
    assert out.text == "a b c\n\nd"
    assert [r.decision for r in out.results] == ["kept", "compressed", "dropped"]
    assert out.results[2].reason == "token budget used up by earlier passages"
    assert out.tokens_after == 4 and out.tokens_before == 8
    assert math.isclose(out.compression_ratio, 2.0)


@pytest.mark.parametrize("query", ["", "   ", b"  "])
def test_empty_query_is_an_error(query, words):
    with pytest.raises(InputError, match=re.escape("query is empty.")):
        truncate(4, words).compress(query, ["a"])


def test_empty_passage_list_gives_empty_context(words):
    out = truncate(4, words).compress("q?", [])
    assert out.results == () and out.text == "" and out.compression_ratio == 1.0


def test_empty_and_whitespace_passages_are_reported_not_lost(words):
    out = truncate(10, words).compress("q?", ["a b", "", " \n\t", "c"])
    assert [r.decision for r in out.results] == ["kept", "empty", "empty", "kept"]
    assert out.results[1].reason == "passage text is empty or whitespace"


def test_duplicate_ids_same_text_marked_duplicate(words):
    p = Passage("a b", id="x")
    out = truncate(10, words).compress("q?", [p, Passage("c", id="y"), p])
    assert [r.decision for r in out.results] == ["kept", "kept", "duplicate"]
    assert out.results[2].reason == "same id and text as passage #0"
    assert out.text == "a b\n\nc"


def test_duplicate_ids_different_text_is_an_error(words):
    msg = "two different passages share the id 'x' (#0 and #1)."
    with pytest.raises(InputError, match=re.escape(msg)):
        truncate(10, words).compress("q?", [Passage("a", id="x"), Passage("b", id="x")])


def test_huge_passage_is_a_clear_error(words):
    big = "word " * 220_000  # ~1 MB
    with pytest.raises(InputError, match=re.escape("over max_passage_chars=200,000. Chunk long documents")):
        truncate(10, words).compress("q?", [big])
    roomy = build_compressor({"type": "none", "max_passage_chars": 2_000_000}, token_counter=words)
    assert roomy.compress("q?", [big]).tokens_after == 220_000


def test_single_passage_instead_of_list_is_an_error(words):
    with pytest.raises(InputError, match=re.escape("passages must be a list of Passage (or str), not a single item.")):
        truncate(10, words).compress("q?", "just one string")


def test_inputs_are_not_mutated_and_outputs_keep_provenance(words):
    p = Passage("a b c d", id="doc1", metadata={"title": "T"}, score=0.7)
    out = truncate(2, words).compress("q?", [p])
    assert p.text == "a b c d"
    r = out.results[0]
    assert r.passage is p
    rec = r.provenance()
    assert rec["passage_id"] == "doc1" and rec["retrieval_score"] == 0.7 and rec["decision"] == "compressed"


def test_batch_equals_single(words):
    c = truncate(3, words)
    qs, ps = ["q1?", "q2?"], [["a b", "c d"], ["e f g h"]]
    batch = c.compress_batch(qs, ps)
    assert [b.text for b in batch] == [c.compress(q, p).text for q, p in zip(qs, ps)]
    with pytest.raises(InputError, match=re.escape("compress_batch got 2 queries but 1 passage lists")):
        c.compress_batch(qs, ps[:1])


def test_chain_runs_in_order_and_keeps_original_passages(words):
    chain = build_compressor([{"type": "truncate", "max_tokens": 4}, {"type": "truncate", "max_tokens": 2}],
                             token_counter=words)
    assert isinstance(chain, ragzip.ChainCompressor)
    src = [Passage("a b c", id="1"), Passage("d e f", id="2"), Passage("g", id="3")]
    out = chain.compress("q?", src)
    assert out.method == "truncate+truncate"
    assert out.text == "a b"
    assert [r.passage.id for r in out.results] == ["1", "2", "3"]
    assert [r.decision for r in out.results] == ["compressed", "dropped", "dropped"]
    assert out.results[0].tokens_before == 3 and out.results[0].tokens_after == 2
    assert [(s.method, s.decision) for s in out.results[1].stages] == [("truncate", "compressed"),
                                                                       ("truncate", "dropped")]
    assert [(s.method, s.decision) for s in out.results[2].stages] == [("truncate", "dropped")]


def test_unknown_type_and_key_errors_suggest_the_close_match():
    with pytest.raises(ConfigError, match=re.escape("unknown type 'truncat' in compressor.type. Did you mean 'truncate'?")):
        build_compressor({"type": "truncat"})
    with pytest.raises(ConfigError, match=re.escape("unknown key 'max_tokns' in compressor[truncate]. Did you mean "
                                                    "'max_tokens'?")):
        build_compressor({"type": "truncate", "max_tokns": 3})
    with pytest.raises(ConfigError, match=re.escape("compressor[truncate].max_tokens = 'ten' must be an integer.")):
        build_compressor({"type": "truncate", "max_tokens": "ten"})
    with pytest.raises(ConfigError, match=re.escape("compressor config has no `type:` key")):
        build_compressor({"max_tokens": 3})


def test_registry_lists_builtins():
    assert {"none", "truncate"} <= set(ragzip.registered_compressors())


def test_atomic_folder_swaps_on_success_and_keeps_the_old_folder_on_error(tmp_path):
    from ragzip.fsutil import atomic_folder

    target = tmp_path / "index"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError, match="half-written"):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("half-written")
    assert (target / "a.txt").read_text() == "one"
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no temporary or old folders left behind
