"""The rule-based sentence splitter (ragzip.text): abbreviations, decimals, quotes, lists, code, scripts, long runs."""

from __future__ import annotations

import re

import pytest

from ragzip.text import ABBREVIATIONS, Sentence, split_sentences

CASES = [
    ("plain", "The cat sat. The dog ran! Did it? Yes.", ["The cat sat.", "The dog ran!", "Did it?", "Yes."]),
    ("titles", "Dr. Watson met Mr. Holmes. They talked.", ["Dr. Watson met Mr. Holmes.", "They talked."]),
    ("initials", "J. R. R. Tolkien wrote it. He was British.", ["J. R. R. Tolkien wrote it.", "He was British."]),
    ("e.g. lower-case", "Use tools, e.g. hammers. Then stop.", ["Use tools, e.g. hammers.", "Then stop."]),
    ("decimals", "Pi is 3.14 roughly. Version 2.0.1 shipped. It cost $3.50.",
     ["Pi is 3.14 roughly.", "Version 2.0.1 shipped.", "It cost $3.50."]),
    ("number abbreviations", "See No. 5 and vol. 2 here. Built c. 1604 by him.",
     ["See No. 5 and vol. 2 here.", "Built c. 1604 by him."]),
    ("abbreviation that ends a sentence", "He moved to the U.S. He liked the U.S. Army.",
     ["He moved to the U.S.", "He liked the U.S. Army."]),
    ("company", "He works at Apple Inc. The firm is big.", ["He works at Apple Inc.", "The firm is big."]),
    ("word not abbreviation", "He said no. Then art. In 1988 it ended.",
     ["He said no.", "Then art.", "In 1988 it ended."]),
    ("url", "Visit www.example.com today. It is free.", ["Visit www.example.com today.", "It is free."]),
    ("quote after period", 'He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("question in quote continues", 'She asked "Why?" and left.', ['She asked "Why?" and left.']),
    ("brackets", "It rained. (It was late.) Next day came.", ["It rained.", "(It was late.)", "Next day came."]),
    ("ellipsis", "Wait... Then go. Hmm... maybe not.", ["Wait...", "Then go.", "Hmm... maybe not."]),
    ("numbered list", "Steps:\n1. Boil water.\n2. Add tea.", ["Steps:", "1. Boil water.", "2. Add tea."]),
    ("bullets", "Fruit\n- apples are red\n- pears\n* plums", ["Fruit", "- apples are red", "- pears", "* plums"]),
    ("paragraphs", "First para without end\n\nSecond para", ["First para without end", "Second para"]),
    ("heading", "# Title\nSome text here. More.", ["# Title", "Some text here.", "More."]),
    ("code block", "Run this:\n```python\nx = 1. \nprint(x)\n```\nDone. Bye.",
     ["Run this:", "```python\nx = 1. \nprint(x)\n```", "Done.", "Bye."]),
    ("japanese", "東京は首都です。大阪は大きい。「はい。」次です。", ["東京は首都です。", "大阪は大きい。", "「はい。」", "次です。"]),
    ("chinese", "我爱北京！你呢？好。", ["我爱北京！", "你呢？", "好。"]),
    ("russian", "Привет. Как дела? Хорошо.", ["Привет.", "Как дела?", "Хорошо."]),
    ("hindi", "यह एक वाक्य है। यह दूसरा है।", ["यह एक वाक्य है।", "यह दूसरा है।"]),
    ("german", "Das ist z. B. gut. Der Hund bellt.", ["Das ist z. B. gut.", "Der Hund bellt."]),
    ("no end mark", "just some words", ["just some words"]),
]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_split(name: str, text: str, expected: list[str]) -> None:
    got = split_sentences(text)
    assert [s.text for s in got] == expected
    for s in got:  # spans point into the original text
        assert text[s.start:s.end] == s.text


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t"])
def test_blank_text_has_no_sentences(text: str) -> None:
    assert split_sentences(text) == []


def test_spans_rebuild_the_text() -> None:
    text = "  Dr. No ran.  He hid!\n\n- item one\n- item two\n```\ncode\n```\nEnd.  "
    sentences = split_sentences(text)
    previous = [Sentence("", 0, 0), *sentences[:-1]]
    rebuilt = "".join(text[a.end:b.start] + b.text for a, b in zip(previous, sentences, strict=True))
    assert rebuilt == text.rstrip()
    assert all(not text[s.start].isspace() and not text[s.end - 1].isspace() for s in sentences)


def test_run_without_boundary_is_cut_at_spaces() -> None:
    text = " ".join(["word"] * 5000)
    pieces = split_sentences(text, max_chars=1000)
    assert len(pieces) > 20
    assert all(len(p.text) <= 1000 for p in pieces)
    assert all(p.text.startswith("word") and p.text.endswith("word") for p in pieces)  # never mid-word
    assert sum(len(p.text.split()) for p in pieces) == 5000


def test_long_run_prefers_clause_marks() -> None:
    text = ("alpha beta gamma delta, " * 30 + "end; ") * 4
    pieces = split_sentences(text, max_chars=400)
    assert all(len(p.text) <= 400 for p in pieces)
    assert all(p.text.endswith((",", ";")) for p in pieces[:-1])


def test_text_without_spaces_is_cut_hard() -> None:
    text = "字" * 2500
    pieces = split_sentences(text, max_chars=1000)
    assert [len(p.text) for p in pieces] == [1000, 1000, 500]


def test_long_code_block_is_cut_at_lines() -> None:
    code = "```\n" + "\n".join(f"x{i} = {i}" for i in range(300)) + "\n```"
    pieces = split_sentences(code, max_chars=500)
    assert len(pieces) > 1
    assert all(len(p.text) <= 500 for p in pieces)
    assert all(re.fullmatch(r"(```\n)?(x\d+ = \d+\n?)+", p.text + "\n") or p.text.endswith("```") for p in pieces)


def test_unclosed_fence_runs_to_the_end() -> None:
    got = split_sentences("Intro. More.\n```\na = 1. B = 2.\n")
    assert [s.text for s in got] == ["Intro.", "More.", "```\na = 1. B = 2."]


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match=re.escape("max_chars must be >= 1, got 0.")):
        split_sentences("a", max_chars=0)


def test_abbreviations_are_lower_case_without_period() -> None:
    assert {"dr", "e.g", "u.s", "no"} <= ABBREVIATIONS
    assert all(a == a.lower() and not a.endswith(".") for a in ABBREVIATIONS)
