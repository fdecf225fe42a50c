"""QA benchmark data: HotpotQA-style and NQ/SQuAD-style JSONL turned into questions with gold passages.

Two record shapes are read, detected per line:

- **HotpotQA-style**: ``question``, ``answer`` (a string), ``context`` = ``[[title, [sentence, ...]], ...]``,
  ``supporting_facts`` = ``[[title, sentence_index], ...]``. Each paragraph becomes one passage; the gold passages are
  the paragraphs whose title appears in ``supporting_facts`` (two for HotpotQA).
- **NQ/SQuAD-style**: ``question``, ``answers`` (a list of strings; a string is accepted too), an optional ``context``
  string (the gold passage; ``null`` or missing means the question has none) and an optional ``title`` or
  ``context_title``.

A passage's text is ``"{title}: {body}"`` (:func:`passage_text`): the title is part of what the retriever embeds, what
every compressor sees and what the generator reads, because multi-hop questions name entities that often appear only
in the title. The title is also kept in ``metadata["title"]``. Passage ids are content hashes of that text
(:func:`ragzip.types.content_id`), so a paragraph shared by several questions is one passage everywhere and the
``faiss`` corpus is de-duplicated by construction.

Question selection is deterministic: :func:`select` shuffles the question order with ``random.Random(seed)`` and takes
the first ``limit``; for one seed, ``limit=5`` is a prefix of ``limit=100``.

Example:
    >>> ex = parse_record({"question": "Capital of France?", "answers": ["Paris"],
    ...                    "context": "Paris is the capital.", "title": "Paris"}, where="demo")
    >>> ex.passages[0].text, ex.answers
    ('Paris: Paris is the capital.', ('Paris',))
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragzip.errors import InputError
from ragzip.types import Passage, content_id

HOTPOTQA = "hotpotqa"
SQUAD = "squad"


@dataclass(frozen=True)
class QAExample:
    """One benchmark question.

    Args:
        id: The record's ``id`` (or ``line<N>`` when it has none).
        question: The question text.
        answers: Gold answer strings (any one counts).
        passages: The question's own passages, in file order (the ``given`` setting reads these).
        gold_ids: Ids of the passages that hold the answer (HotpotQA: the supporting paragraphs; SQuAD/NQ: its
            ``context``). Empty when the record names none; such questions are left out of recall@K.
        kind: ``"hotpotqa"`` or ``"squad"`` (the record shape it was read from).
        meta: Extra fields worth keeping for error analysis (HotpotQA ``type`` and ``level``).
        supporting: HotpotQA's supporting-fact sentences (stripped), in ``supporting_facts`` order; empty for other
            data. The evidence metrics ``sf_recall``/``sf_all`` look for them verbatim in the compressed context.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    passages: tuple[Passage, ...]
    gold_ids: tuple[str, ...]
    kind: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    supporting: tuple[str, ...] = ()


def passage_text(title: str | None, body: str) -> str:
    """The text of a passage: ``"{title}: {body}"``, or ``body`` alone when there is no title."""
    body = body.strip()
    title = (title or "").strip()
    return f"{title}: {body}" if title else body


def make_passage(title: str | None, body: str, source: str) -> Passage:
    """A passage with the standard text, a content-hash id and its title in metadata."""
    text = passage_text(title, body)
    meta: dict[str, Any] = {"source": source}
    if title:
        meta["title"] = title.strip()
    return Passage(text, id=content_id(text), metadata=meta)


def _strings(value: Any, what: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: `{what}` must be a string or a list of strings, got {value!r}.")
    out: list[str] = []
    for v in value:
        if v.strip() and v not in out:
            out.append(v)
    if not out:
        raise InputError(f"{where}: `{what}` has no non-empty answer string; every question needs a gold answer.")
    return tuple(out)


def _hotpot_passages(context: list[Any], where: str) -> list[Passage]:
    passages = []
    for i, item in enumerate(context):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise InputError(f"{where}: context[{i}] must be [title, [sentences]] (HotpotQA) but is {item!r:.80}.")
        title, sentences = item
        if isinstance(sentences, str):
            body = sentences
        elif isinstance(sentences, (list, tuple)) and all(isinstance(s, str) for s in sentences):
            body = "".join(sentences)  # HotpotQA sentences carry their leading spaces
        else:
            raise InputError(f"{where}: context[{i}] sentences must be a list of strings, got {sentences!r:.80}.")
        if body.strip():
            passages.append(make_passage(title, body, HOTPOTQA))
    return passages


def _supporting_sentences(context: list[Any], facts: Sequence[Any]) -> tuple[str, ...]:
    """The sentences named by ``[[title, index], ...]``; facts that point nowhere are left out."""
    by_title: dict[str, Any] = {}
    for item in context:
        by_title.setdefault(item[0], item[1])
    out: list[str] = []
    for fact in facts:
        if not (isinstance(fact, (list, tuple)) and len(fact) == 2 and isinstance(fact[1], int)):
            continue
        sentences = by_title.get(fact[0])
        if isinstance(sentences, (list, tuple)) and 0 <= fact[1] < len(sentences) and sentences[fact[1]].strip():
            out.append(sentences[fact[1]].strip())
    return tuple(dict.fromkeys(out))


def same_article_distractors(examples: Sequence[QAExample], pool: Sequence[QAExample], n: int,
                             seed: int) -> list[list[Passage]]:
    """Each question's own passages plus ``n`` other passages of the same article (same ``metadata["title"]``) drawn
    from ``pool``, shuffled: SQuAD's hard, same-topic distractor setting. Seeded per question, so a question's set
    does not depend on which other questions run."""
    by_title: dict[str, dict[str, Passage]] = {}
    for ex in pool:
        for p in ex.passages:
            by_title.setdefault(str(p.metadata.get("title", "")), {}).setdefault(p.id, p)
    out = []
    for ex in examples:
        own = list(ex.passages)
        rng = random.Random(f"{seed}:{ex.id}")
        title = str(own[0].metadata.get("title", "")) if own else ""
        others = sorted(pid for pid in by_title.get(title, {}) if pid not in {p.id for p in own})
        chosen = [by_title[title][pid] for pid in rng.sample(others, min(n, len(others)))]
        items = own + chosen
        rng.shuffle(items)
        out.append(items)
    return out


def parse_record(record: Mapping[str, Any], *, where: str, default_id: str = "") -> QAExample:
    """Turn one JSON record (HotpotQA-style or NQ/SQuAD-style) into a :class:`QAExample`.

    Raises:
        InputError: naming ``where`` (file and line) and the field that is missing or malformed.
    """
    if not isinstance(record, Mapping):
        raise InputError(f"{where}: each line must be a JSON object, got {type(record).__name__}.")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"{where}: no `question` string. Expected HotpotQA-style records (question, answer, "
                         "context=[[title, [sentences]]], supporting_facts) or NQ/SQuAD-style records (question, "
                         "answers, optional context and title).")
    qid = str(record.get("id") or record.get("_id") or default_id)
    context = record.get("context")
    if "answers" in record:
        answers = _strings(record["answers"], "answers", where)
    elif "answer" in record:
        answers = _strings(record["answer"], "answer", where)
    else:
        raise InputError(f"{where}: no `answer` (HotpotQA-style) or `answers` (NQ/SQuAD-style) field.")

    if isinstance(context, list):  # HotpotQA: [[title, [sentences]], ...]
        passages = _hotpot_passages(context, where)
        gold_titles = {sf[0] for sf in record.get("supporting_facts") or () if isinstance(sf, (list, tuple)) and sf}
        gold_ids = tuple(dict.fromkeys(p.id for p in passages if p.metadata.get("title") in gold_titles))
        meta = {k: record[k] for k in ("type", "level") if k in record}
        return QAExample(qid, question, answers, tuple(passages), gold_ids, HOTPOTQA, meta,
                         _supporting_sentences(context, record.get("supporting_facts") or ()))
    if context is None or isinstance(context, str):  # NQ / SQuAD: one gold passage, or none
        title = record.get("title") or record.get("context_title")
        if isinstance(title, str):
            title = title.replace("_", " ")  # SQuAD titles are URL slugs ("Super_Bowl_50")
        else:
            title = None
        passages = [make_passage(title, context, SQUAD)] if context and context.strip() else []
        return QAExample(qid, question, answers, tuple(passages), tuple(p.id for p in passages), SQUAD, {})
    raise InputError(f"{where}: `context` must be a string, null, or HotpotQA's [[title, [sentences]]] list; "
                     f"got {type(context).__name__}.")


def load_qa(path: str | Path) -> list[QAExample]:
    """Read every question of a JSONL file, in file order (blank lines are skipped).

    Raises:
        InputError: for a missing file, a line that is not JSON, or a record of neither supported shape.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {str(path)!r} does not exist. Pass a HotpotQA-style or NQ/SQuAD-style JSONL "
                         "file, e.g. `--data ../shared/data/hotpotqa_dev.jsonl`.")
    examples: list[QAExample] = []
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{where} is not valid JSON ({err.msg} at column {err.colno}); "
                                 "the file must hold one JSON object per line.") from None
            examples.append(parse_record(record, where=where, default_id=f"line{n}"))
    if not examples:
        raise InputError(f"data file {str(path)!r} holds no questions.")
    return examples


def select(examples: Sequence[QAExample], limit: int | None = None, seed: int = 0) -> list[QAExample]:
    """The first ``limit`` questions after a shuffle seeded with ``seed`` (all of them, shuffled, when ``limit`` is None).

    Raises:
        InputError: when ``limit`` is below 1.
    """
    if limit is not None and limit < 1:
        raise InputError(f"limit must be at least 1, got {limit!r}.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in order[:limit]]


def corpus(examples: Sequence[QAExample]) -> list[Passage]:
    """Every distinct passage of ``examples`` (by content id), in first-seen order: what the ``faiss`` index holds."""
    seen: dict[str, Passage] = {}
    for ex in examples:
        for p in ex.passages:
            seen.setdefault(p.id, p)
    return list(seen.values())


def recall(retrieved: Sequence[Passage], gold_ids: Sequence[str]) -> float | None:
    """Fraction of the gold passages among ``retrieved`` (None when the question names no gold passage)."""
    if not gold_ids:
        return None
    got = {p.id for p in retrieved}
    return sum(g in got for g in gold_ids) / len(gold_ids)


__all__ = ["HOTPOTQA", "SQUAD", "QAExample", "corpus", "load_qa", "make_passage", "parse_record", "passage_text",
           "recall", "same_article_distractors", "select"]
