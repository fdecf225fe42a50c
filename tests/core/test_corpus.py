"""Corpus loading (JSONL, folders, bad input) and chunking; the shipped demo corpus."""

from __future__ import annotations

import json
import logging
import random
import re
from importlib import resources

import pytest

from ragzip import ConfigError, InputError, Passage
from ragzip.corpus import Corpus, chunk_passages, chunk_text, load_corpus


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --- JSONL ------------------------------------------------------------------------------------------------------------


def test_jsonl_keeps_ids_titles_metadata_and_order(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [
        {"id": "b", "text": "Beta text.", "title": "Beta", "url": "http://b", "year": 2001},
        "",
        {"id": 7, "text": "Seven."},
        {"text": "No id here."},
    ])
    corpus = load_corpus(f)
    assert isinstance(corpus, Corpus) and isinstance(corpus, list)
    assert [p.id for p in corpus] == ["b", "7", "L4"]  # a missing id is the line number
    assert dict(corpus[0].metadata) == {"title": "Beta", "url": "http://b", "year": 2001}
    assert corpus[0].text == "Beta text." and dict(corpus[1].metadata) == {}
    assert corpus.stats.documents == 3 and corpus.stats.kept == 3 and corpus.stats.skipped_empty == []


def test_jsonl_utf8_bom_and_non_ascii(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "k", "text": "Skłodowska – café"}, ensure_ascii=False).encode())
    assert load_corpus(f)[0].text == "Skłodowska – café"


def test_empty_and_whitespace_docs_are_skipped_logged_and_counted(tmp_path, caplog):
    f = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "Real text."}, {"id": "e1", "text": ""},
                                           {"id": "e2", "text": " \n\t "}])
    with caplog.at_level(logging.WARNING, logger="ragzip.corpus"):
        corpus = load_corpus(f)
    assert [p.id for p in corpus] == ["a"]
    assert corpus.stats.skipped_empty == ["e1", "e2"] and corpus.stats.documents == 3 and corpus.stats.kept == 1
    assert corpus.stats.as_dict()["skipped_empty"] == 2
    assert f"skipped 2 empty or whitespace-only document(s) in {f}: 'e1', 'e2'" in caplog.text


def test_bad_json_line_names_the_line(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "ok"}, '{"id": "b", "text": "oops"'])
    msg = f"{f}, line 2: not valid JSON (Expecting ',' delimiter at column 27). Each line of a JSONL corpus must be one JSON object"
    with pytest.raises(InputError, match=re.escape(msg)):
        load_corpus(f)


@pytest.mark.parametrize(("row", "msg"), [
    ({"id": "a", "body": "x"}, "line 1: no \"text\" key (keys: 'id', 'body'). Each record needs the passage text under "
                               "\"text\"; rename the field holding it."),
    ('["a", "b"]', 'line 1: expected a JSON object with a "text" key, got list.'),
    ({"id": "a", "text": 3}, 'line 1: "text" must be a string, got int.'),
    ({"id": [1], "text": "x"}, 'line 1: "id" must be a string or an integer, got [1].'),
    ({"id": "a", "text": "x", "title": 5}, 'line 1: "title" must be a string, got int.'),
])
def test_bad_records(tmp_path, row, msg):
    f = write_jsonl(tmp_path / "c.jsonl", [row])
    with pytest.raises(InputError, match=re.escape(f"{f}, {msg}")):
        load_corpus(f)


def test_non_utf8_names_file_offset_and_fix(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n')
    msg = (f"{f} is not valid UTF-8: byte offset 50 (line 2) holds b'\\xe9\"}}\\n'. ragzip reads corpora as UTF-8; "
           "convert the file first, e.g. `iconv -f latin1 -t utf-8 c.jsonl > c.utf8.jsonl`")
    with pytest.raises(InputError, match=re.escape(msg)):
        load_corpus(f)


def test_duplicate_ids_are_an_error(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}])
    msg = f"duplicate id 'a' in corpus {f} (line 1 and line 3). Every document needs a unique id"
    with pytest.raises(InputError, match=re.escape(msg)):
        load_corpus(f)


@pytest.mark.parametrize("rows", [[], [""], [{"id": "a", "text": "  "}]])
def test_empty_corpus_file(tmp_path, rows):
    f = write_jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(InputError, match=re.escape(f"corpus {f} has no documents to index")):
        load_corpus(f)


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match=re.escape(f"corpus '{tmp_path / 'nope.jsonl'}' does not exist.")):
        load_corpus(tmp_path / "nope.jsonl")


# --- folders ----------------------------------------------------------------------------------------------------------


def test_folder_of_txt_and_md(tmp_path, caplog):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.txt").write_text("Alpha text.", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("Intro line\n\n# Bee Guide\n\nBees dance.", encoding="utf-8")
    (tmp_path / "sub" / "c.md").write_text("No heading.", encoding="utf-8")
    (tmp_path / ".git" / "x.txt").write_text("hidden", encoding="utf-8")
    (tmp_path / ".hidden.md").write_text("hidden", encoding="utf-8")
    (tmp_path / "data.csv").write_text("a,b", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="ragzip.corpus"):
        corpus = load_corpus(tmp_path)
    assert [p.id for p in corpus] == ["a.txt", "sub/b.md", "sub/c.md"]
    assert [p.metadata["title"] for p in corpus] == ["a", "Bee Guide", "c"]
    assert corpus.stats.skipped_empty == ["empty.txt"]
    assert "ignored 1 file(s) that are not .txt/.md/.markdown" in caplog.text


def test_single_text_file(tmp_path):
    f = tmp_path / "notes.md"
    f.write_text("# Notes\nSome text.", encoding="utf-8")
    corpus = load_corpus(f)
    assert [(p.id, p.metadata["title"]) for p in corpus] == [("notes.md", "Notes")]


def test_empty_folder_and_folder_without_text_files(tmp_path):
    msg = f"corpus folder {tmp_path} has no .txt or .md files (found 0 other file(s)). Put one document per .txt/.md file"
    with pytest.raises(InputError, match=re.escape(msg)):
        load_corpus(tmp_path)
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(InputError, match=re.escape("has no .txt or .md files (found 1 other file(s))")):
        load_corpus(tmp_path)


def test_folder_with_non_utf8_file(tmp_path):
    (tmp_path / "ok.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"Na\xefve text")
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'bad.txt'} is not valid UTF-8: byte offset 2 (line 1)")):
        load_corpus(tmp_path)


def test_folder_of_only_empty_files(tmp_path):
    (tmp_path / "a.txt").write_text("   ", encoding="utf-8")
    msg = f"corpus {tmp_path} has no documents to index (1 document(s), all empty or whitespace)."
    with pytest.raises(InputError, match=re.escape(msg)):
        load_corpus(tmp_path)


# --- chunking ---------------------------------------------------------------------------------------------------------


def test_chunks_end_at_sentences_and_overlap_by_whole_sentences():
    text = "One two three. Four five six. Seven eight."
    assert chunk_text(text, chunk_words=6, overlap=3) == ["One two three. Four five six.", "Four five six. Seven eight."]
    assert chunk_text(text, chunk_words=6, overlap=0) == ["One two three. Four five six.", "Seven eight."]
    assert chunk_text(text, chunk_words=100, overlap=20) == [text]


def test_paragraph_breaks_are_boundaries_and_chunks_are_slices():
    text = 'Heading without period\n\nHe said "Hi." Then he left.\n\nLast one'
    chunks = chunk_text(text, chunk_words=4, overlap=0)
    assert chunks == ["Heading without period", 'He said "Hi."', "Then he left.", "Last one"]
    assert all(c in text for c in chunks)


def test_run_on_text_gets_word_level_chunks_and_overlap():
    text = " ".join(f"w{i}" for i in range(300))
    spans = [(c.split()[0], c.split()[-1], len(c.split())) for c in chunk_text(text, 120, 20)]
    assert spans == [("w0", "w119", 120), ("w100", "w219", 120), ("w200", "w299", 100)]


def test_chunking_invariants_on_random_texts():
    rng = random.Random(0)
    for _ in range(500):
        chunk_words = rng.randint(1, 15)
        overlap = rng.randint(0, chunk_words - 1)
        words = [f"x{i}" + rng.choice(["", "", "", ".", "!\n\n"]) for i in range(rng.randint(0, 40))]
        text = " ".join(words)
        chunks = chunk_text(text, chunk_words, overlap)
        assert all(0 < len(c.split()) <= chunk_words and c in text for c in chunks)
        assert [w for c in chunks for w in c.split()][-1:] == text.split()[-1:]
        assert {w for c in chunks for w in c.split()} == set(text.split())  # nothing lost


def test_chunk_passages_ids_and_metadata():
    docs = [Passage("A b c. D e f. G h.", id="doc", metadata={"title": "Doc", "url": "u"}),
            Passage("Short.", id="s")]
    chunks = chunk_passages(docs, chunk_words=3, overlap=0)
    assert [c.id for c in chunks] == ["doc#0", "doc#1", "doc#2", "s#0"]
    assert dict(chunks[1].metadata) == {"title": "Doc", "url": "u", "doc_id": "doc", "chunk_index": 1}
    assert chunks[3].metadata["title"] == "s"  # no title: the doc id
    assert docs[0].metadata == {"title": "Doc", "url": "u"}  # inputs untouched


@pytest.mark.parametrize(("words", "overlap", "msg"), [
    (0, 0, "chunk_words = 0 must be a positive integer (words per chunk), e.g. 120."),
    (10, 10, "chunk_overlap = 10 must be an integer in [0, chunk_words) = [0, 10); e.g. 20 for chunks of 120 words."),
    (10, -1, "chunk_overlap = -1 must be an integer in [0, chunk_words) = [0, 10)"),
])
def test_chunking_parameters_are_checked(words, overlap, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)):
        chunk_passages([Passage("x", id="a")], words, overlap)


# --- the shipped demo corpus ------------------------------------------------------------------------------------------


def test_demo_corpus_and_questions_are_consistent():
    data = resources.files("ragzip") / "demo"
    corpus = load_corpus(str(data / "demo_corpus.jsonl"))
    assert len(corpus) >= 40 and corpus.stats.skipped_empty == []
    assert all(60 <= len(p.text.split()) <= 150 and p.metadata["title"] for p in corpus)
    by_id = {p.id: p for p in corpus}
    questions = [json.loads(line) for line in (data / "demo_questions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(questions) >= 8
    for q in questions:
        assert q["question"].endswith("?") and q["answers"]
        assert any(a in by_id[q["gold_ids"][0]].text for a in q["answers"])
