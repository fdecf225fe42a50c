"""Answer metrics: SQuAD normalisation, EM, F1 (max over golds) and acc (gold occurs in the output)."""

from __future__ import annotations

import pytest

from ragzip.metrics import exact_match, f1_score, has_answer, normalize_answer, score


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  a   cat,  an apple ", "cat apple"),
        ("Theatre of the Absurd", "theatre of absurd"),  # only whole-word articles go
        ("U.S.A.", "usa"),
        ("", ""),
        ("THE", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "acc", "em", "f1"),
    [
        ("Paris", ["Paris"], 1.0, 1.0, 1.0),
        ("the Paris.", ["Paris"], 1.0, 1.0, 1.0),
        ("The answer is Paris.", ["Paris", "City of Paris"], 1.0, 0.0, 0.5),
        ("London", ["Paris"], 0.0, 0.0, 0.0),
        ("", ["Paris"], 0.0, 0.0, 0.0),
        ("It is not known.", ["no"], 0.0, 0.0, 0.0),  # "no" is not inside "not": word boundaries
        ("No, they are not.", ["no"], 1.0, 0.0, 0.4),
        ("yes", ["yes", "no"], 1.0, 1.0, 1.0),
        ("Chicago and Doha, Qatar", ["with other campuses located in Chicago and Doha, Qatar"], 0.0, 0.0, 8 / 13),
        ("Denver Broncos", ["Denver Broncos", "Denver Broncos", "Broncos"], 1.0, 1.0, 1.0),
        ("Broncos", ["Denver Broncos"], 0.0, 0.0, 2 / 3),
        ("anything", ["the"], 0.0, 0.0, 0.0),  # a gold that normalises to nothing never matches
        ("1,000 people", ["1000"], 1.0, 0.0, 2 / 3),  # punctuation goes before matching
    ],
)
def test_scores_table(prediction, golds, acc, em, f1):
    assert has_answer(prediction, golds) == acc
    assert exact_match(prediction, golds) == em
    assert f1_score(prediction, golds) == pytest.approx(f1)
    assert score(prediction, golds) == {"acc": acc, "em": em, "f1": pytest.approx(f1)}


def test_single_gold_string_is_accepted():
    assert score("Paris", "Paris") == {"acc": 1.0, "em": 1.0, "f1": 1.0}


def test_no_golds_scores_zero():
    assert score("Paris", []) == {"acc": 0.0, "em": 0.0, "f1": 0.0}
