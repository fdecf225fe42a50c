"""The sentence splitter is linear in the text length, and its units carry their kind (sentence, heading, bullet,
table row, ...) and their exact character span in the passage.

A splitter that rescans the paragraph from its start at each candidate end mark (the word before the mark, the line
start, the rest of the paragraph) takes seconds on an 80k-char paragraph and minutes on a crafted 199,999-char one.
"""

from __future__ import annotations

import random
import time

import pytest

from ragzip.text import UNIT_KINDS, Sentence, split_sentences

# Inputs that hit each step a rescanning splitter makes quadratic: initials (a candidate mark every 3 chars, never a
# cut, so the paragraph start never moves), long words before marks, prose with abbreviations, fences, line structure.
ADVERSARIAL = {
    "initials": lambda n: ("A. " * (n // 3 + 1))[:n],
    "long words before marks": lambda n: (("x" * 50 + ". B ") * (n // 54 + 1))[:n],
    "abbreviations": lambda n: ("Dr. Smith met J. R. Tolkien in the U.S. It was 3.14 p.m. He left! " * (n // 66 + 1))[:n],
    "fences": lambda n: (("```\n" "~~~\n") * (n // 8 + 1))[:n],
    "no space": lambda n: "a" * n,
    "markdown lines": lambda n: ("- item one. Two\n| a | b |\n# H\n" * (n // 30 + 1))[:n],
}


def _best_time(text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        split_sentences(text)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_twice_the_input_takes_about_twice_the_time(name: str) -> None:
    make = ADVERSARIAL[name]
    n = 40_000
    for _attempt in range(3):  # a shared CPU is noisy: a quadratic splitter fails every attempt (ratio ~4)
        small, large = _best_time(make(n), 2), _best_time(make(2 * n), 2)
        assert large < 2.0, f"{name}: {2 * n} chars took {large:.1f} s (~0.05 s when linear; ~25 s when rescanning)"
        ratio = large / max(small, 1e-4)
        if ratio < 3.0 or large < 0.02:  # under 20 ms for 80k chars is linear whatever the ratio says
            return
    pytest.fail(f"{name}: {2 * n} chars took {large:.3f} s, {ratio:.1f}x the {small:.3f} s of {n} chars")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_199999_char_passage_splits_quickly(name: str) -> None:
    text = ADVERSARIAL[name](199_999)
    assert len(text) == 199_999
    start = time.perf_counter()
    units = split_sentences(text)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"{name}: {elapsed:.1f} s"  # measured ~0.2 s; minutes when rescanning
    assert all(text[u.start:u.end] == u.text and len(u.text) <= 1000 for u in units)


def test_units_have_kinds() -> None:
    text = ("# Results\n"
            "The model wins. It is small.\n"
            "- first item. With a second sentence.\n"
            "- second item\n"
            "\n"
            "| model | score |\n"
            "|:------|------:|\n"
            "| tiny  | 3.5. |\n"
            "\n"
            "```\nx = 1. y = 2.\n```\n"
            "Done.")
    got = [(u.kind, u.text) for u in split_sentences(text)]
    assert got == [
        ("heading", "# Results"),
        ("sentence", "The model wins."),
        ("sentence", "It is small."),
        ("bullet", "- first item."),
        ("bullet", "With a second sentence."),
        ("bullet", "- second item"),
        ("table_row", "| model | score |"),
        ("table_rule", "|:------|------:|"),
        ("table_row", "| tiny  | 3.5. |"),
        ("code", "```\nx = 1. y = 2.\n```"),
        ("sentence", "Done."),
    ]
    assert {kind for kind, _ in got} <= set(UNIT_KINDS)


def test_old_three_field_sentence_still_constructs_and_compares() -> None:
    assert Sentence("Hi.", 0, 3) == Sentence("Hi.", 0, 3, "sentence")
    assert split_sentences("Hi. Bye.") == [Sentence("Hi.", 0, 3), Sentence("Bye.", 4, 8)]


_ALPHABET = ["a", "B", " ", "  ", "\n", "\n\n", ".", ". ", "! ", "? ", "…", "。", "Dr. ", "e.g. ", "U.S. ", "3.14",
             "\"", "”", "(", ")", "- ", "1. ", "# ", "| a |", "|---|", "```\n", "~~~", "\t", "\u00a0", "\u2028",
             "\x00", "\x1b", "é", "İ", "ß", "\ufeff", "🙂", "<<ragzip:soft:" + "0" * 32 + ">>"]


@pytest.mark.parametrize("seed", range(40))
def test_spans_point_into_the_text_for_random_input(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 400)))
    units = split_sentences(text, max_chars=rng.choice([5, 50, 1000]))
    previous_end = 0
    for u in units:
        assert text[u.start:u.end] == u.text and u.text.strip() == u.text and u.text
        assert u.start >= previous_end and u.kind in UNIT_KINDS
        assert not text[previous_end:u.start].strip()  # only whitespace between units: nothing is lost
        previous_end = u.end
    assert not text[previous_end:].strip()
