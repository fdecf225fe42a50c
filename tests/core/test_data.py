"""QA data loading: HotpotQA-style and NQ/SQuAD-style JSONL, gold passages, the faiss corpus, seeded selection."""

from __future__ import annotations

import gzip
import json
import random
import re

import pytest

from ragzip.data import (
    HOTPOTQA,
    QED,
    SQUAD,
    Paragraph,
    Question,
    corpus,
    five_passages,
    gold_or_anchor,
    held_out_ids,
    load_qa,
    load_questions,
    parse_record,
    passage_sets,
    passage_text,
    recall,
    select,
    split_holdout,
)
from ragzip.errors import InputError
from ragzip.types import content_id

HOTPOT = {
    "id": "h1", "question": "Which city hosts the tower designed by Gustave Eiffel?", "answer": "Paris",
    "type": "bridge", "level": "easy",
    "context": [["Eiffel Tower", ["The Eiffel Tower is in Paris.", " It opened in 1889."]],
                ["Gustave Eiffel", ["Gustave Eiffel was an engineer.", " He designed the tower."]],
                ["Big Ben", ["Big Ben is in London."]]],
    "supporting_facts": [["Eiffel Tower", 0], ["Gustave Eiffel", 1]],
}
SQUAD_REC = {"id": "s1", "question": "Who won Super Bowl 50?", "answers": ["Denver Broncos", "Denver Broncos", "Broncos"],
             "context": "The Denver Broncos won Super Bowl 50.", "title": "Super_Bowl_50"}
NQ_NONE = {"id": "n1", "question": "who won last year", "answers": ["South Carolina"], "context": None,
           "context_title": None}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_hotpotqa_record():
    ex = parse_record(HOTPOT, where="t")
    assert ex.kind == HOTPOTQA and ex.id == "h1" and ex.answers == ("Paris",)
    assert [p.text for p in ex.passages] == [
        "Eiffel Tower: The Eiffel Tower is in Paris. It opened in 1889.",
        "Gustave Eiffel: Gustave Eiffel was an engineer. He designed the tower.",
        "Big Ben: Big Ben is in London.",
    ]
    assert [p.metadata["title"] for p in ex.passages] == ["Eiffel Tower", "Gustave Eiffel", "Big Ben"]
    assert ex.gold_ids == (ex.passages[0].id, ex.passages[1].id)
    assert ex.passages[0].id == content_id(ex.passages[0].text)
    assert ex.meta == {"type": "bridge", "level": "easy"}


@pytest.mark.parametrize(
    ("record", "texts", "answers", "n_gold"),
    [
        (SQUAD_REC, ["Super Bowl 50: The Denver Broncos won Super Bowl 50."], ("Denver Broncos", "Broncos"), 1),
        ({**NQ_NONE, "context": "South Carolina won.", "context_title": "NCAA"}, ["NCAA: South Carolina won."],
         ("South Carolina",), 1),
        (NQ_NONE, [], ("South Carolina",), 0),
        ({"question": "q?", "answers": "a", "context": "plain"}, ["plain"], ("a",), 1),
    ],
)
def test_squad_and_nq_records(record, texts, answers, n_gold):
    ex = parse_record(record, where="t", default_id="line1")
    assert ex.kind == SQUAD
    assert [p.text for p in ex.passages] == texts
    assert ex.answers == answers
    assert len(ex.gold_ids) == n_gold


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"answers": ["a"]}, "t: no `question` string."),
        ({"question": "q?"}, "t: no `answer` (HotpotQA-style) or `answers` (NQ/SQuAD-style) field."),
        ({"question": "q?", "answers": [" "]}, "t: `answers` has no non-empty answer string"),
        ({"question": "q?", "answers": [1]}, "t: `answers` must be a string or a list of strings, got [1]."),
        ({"question": "q?", "answer": "a", "context": [["only title"]]}, "t: context[0] must be [title, [sentences]]"),
        ({"question": "q?", "answer": "a", "context": 3}, "t: `context` must be a string, null, or HotpotQA's"),
    ],
)
def test_bad_records(record, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse_record(record, where="t")


def test_load_qa_reads_both_shapes_and_skips_blank_lines(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(HOTPOT) + "\n\n" + json.dumps(SQUAD_REC) + "\n", encoding="utf-8")
    examples = load_qa(path)
    assert [e.id for e in examples] == ["h1", "s1"]


def test_load_qa_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(HOTPOT) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape("bad.jsonl line 2 is not valid JSON")):
        load_qa(path)
    with pytest.raises(InputError, match=re.escape(f"data file {str(tmp_path / 'nope.jsonl')!r} does not exist.")):
        load_qa(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape("holds no questions")):
        load_qa(empty)


def test_corpus_deduplicates_shared_paragraphs():
    other = {**HOTPOT, "id": "h2", "question": "Where is Big Ben?", "answer": "London",
             "context": [HOTPOT["context"][2], ["Thames", ["The Thames flows through London."]]],
             "supporting_facts": [["Big Ben", 0]]}
    a, b = parse_record(HOTPOT, where="a"), parse_record(other, where="b")
    passages = corpus([a, b])
    assert [p.metadata["title"] for p in passages] == ["Eiffel Tower", "Gustave Eiffel", "Big Ben", "Thames"]
    assert b.passages[0].id == a.passages[2].id


def test_select_is_seeded_and_prefix_stable():
    examples = [parse_record({"question": f"q{i}?", "answers": ["a"]}, where="t", default_id=str(i)) for i in range(20)]
    five = select(examples, 5, seed=3)
    assert [e.id for e in five] == [e.id for e in select(examples, 5, seed=3)]
    assert [e.id for e in select(examples, 10, seed=3)][:5] == [e.id for e in five]
    assert [e.id for e in select(examples, 5, seed=4)] != [e.id for e in five]
    assert sorted(e.id for e in select(examples, None, seed=3)) == sorted(e.id for e in examples)
    assert len(select(examples, 100)) == 20
    with pytest.raises(InputError, match=re.escape("limit must be at least 1, got 0.")):
        select(examples, 0)


def test_recall():
    ex = parse_record(HOTPOT, where="t")
    assert recall(ex.passages, ex.gold_ids) == 1.0
    assert recall(ex.passages[1:], ex.gold_ids) == 0.5
    assert recall([], ex.gold_ids) == 0.0
    assert recall(ex.passages, ()) is None


def test_passage_text_without_title():
    assert passage_text(None, " body ") == "body"
    assert passage_text("T", "body") == "T: body"


def test_training_readers_detect_the_shape_and_fail_clearly(tmp_path):
    """ragzip.data reads the trainers' files: HotpotQA, QED and SQuAD shapes, .gz or not; bad paths are InputErrors."""
    qed = tmp_path / "qed.jsonl.gz"
    with gzip.open(qed, "wt", encoding="utf-8") as handle:
        for i in range(6):
            handle.write(json.dumps({"id": f"q{i}", "question": f"who {i}?", "context": "A one. B two. C three.",
                                     "title": "T", "sentence_starts": [0, 7, 14], "answer_sentence_idx": [1]}) + "\n")
    squad = tmp_path / "squad.jsonl"
    squad.write_text("\n".join(json.dumps({"id": f"s{i}", "question": "where?", "answers": ["Paris"],
                                           "answer_starts": [9], "context": "It is in Paris. Not here.",
                                           "title": "Art"}) for i in range(3)) + "\n")
    questions = load_questions([qed, squad])
    assert [q.source for q in questions] == [QED] * 6 + [SQUAD] * 3
    assert questions[0].paragraphs[0].labels == [0, 1, 0]
    assert questions[-1].paragraphs[0].labels == [1, 0]
    train, held = split_holdout(questions, 1, seed=0)
    assert len(held) == 2 and len(train) == 7 and {q.source for q in held} == {QED, SQUAD}
    with pytest.raises(InputError, match="no such file"):
        load_questions([tmp_path / "missing.jsonl"])
    (tmp_path / "odd.jsonl").write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(InputError, match="unknown record shape"):
        load_questions([tmp_path / "odd.jsonl"])


def _paragraph(query, title, labels, anchor=False):
    return Paragraph(query, title, [f"{title} sentence {k}." for k in range(len(labels))], list(labels), anchor)


def _titles(paragraphs):
    return [p.title for p in paragraphs]


def test_passage_sets_fill_five_from_gold_then_context_order():
    """Gold (and anchor) paragraphs first, then the question's own distractors in context order, five in all."""
    q = Question("q", "who?", [_paragraph("who?", t, lab, anchor=(t == "anchor")) for t, lab in [
        ("d1", [0]), ("g1", [0, 1]), ("d2", [0]), ("anchor", [0]), ("d3", [0]), ("d4", [0]), ("d5", [0])]])
    sets = passage_sets(q.paragraphs, gold_or_anchor)
    assert _titles(sets.gold) == ["g1", "anchor"]
    assert _titles(sets.with_gold()) == ["g1", "anchor", "d1", "d2", "d3"]
    assert _titles(sets.distractors_only()) == ["d1", "d2", "d3", "d4", "d5"] and sets.borrowed == []
    assert _titles(five_passages(q)) == ["d1", "g1", "d2", "anchor", "d3"]  # context order
    shuffled = sets.with_gold(random.Random(0))
    assert sorted(_titles(shuffled)) == sorted(_titles(sets.with_gold()))
    assert sets.with_gold(random.Random(0)) == shuffled  # seeded


def test_passage_sets_borrow_only_when_short_and_skip_what_is_unfit():
    calls = []

    def borrow():
        calls.append(1)
        yield from ["gold", "a", "x-answer", "c", "c", "d", "e"]

    enough = passage_sets(["gold", "a", "b"], lambda p: p == "gold", size=2, borrow=borrow)
    assert calls == [] and enough.distractors == ["a", "b"]  # never called: two distractors of its own
    sets = passage_sets(["gold", "a", "b"], lambda p: p == "gold", size=4, borrow=borrow, key=str,
                        accept=lambda p: "answer" not in p)
    assert calls == [1]
    assert sets.borrowed == ["c", "d"]  # "gold"/"a" are its own, "x-answer" rejected, the second "c" a repeat
    assert sets.with_gold() == ["gold", "a", "b", "c"] and sets.distractors_only() == ["a", "b", "c", "d"]
    drawn = iter(range(10))
    passage_sets([], lambda p: False, size=3, borrow=lambda: (next(drawn) for _ in range(10)))
    assert next(drawn) == 3  # a lazy borrow draws only what it takes


def _six_qed_questions(tmp_path):
    qed = tmp_path / "qed.jsonl.gz"
    with gzip.open(qed, "wt", encoding="utf-8") as handle:
        for i in range(6):
            handle.write(json.dumps({"id": f"q{i}", "question": f"who {i}?", "context": f"A{i} one. B{i} two.",
                                     "title": f"T{i}", "sentence_starts": [0, 8], "answer_sentence_idx": [1]}) + "\n")
    return qed


def test_held_out_ids_are_the_split_a_trainer_holds_out(tmp_path):
    qed = _six_qed_questions(tmp_path)
    ids = held_out_ids([qed], 2, 0, QED)
    assert len(ids) == 2 and ids == {q.id for q in split_holdout(load_questions([qed]), 2, 0)[1]}
    assert held_out_ids([qed], 2, 0, HOTPOTQA) == set()


def test_split_holdout_gives_held_out_qed_questions_four_borrowed_distractors(tmp_path):
    qed = _six_qed_questions(tmp_path)
    _, held = split_holdout(load_questions([qed]), 6, seed=0)
    assert all(q.source == QED for q in held)
    for i, q in enumerate(held):
        assert _titles(q.paragraphs) == [held[(i + j) % 6].paragraphs[0].title for j in range(5)]
        assert all(p.query == q.query and p.labels == [0, 0] for p in q.paragraphs[1:])
