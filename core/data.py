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

import gzip
import json
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeVar

from ragzip.errors import InputError
from ragzip.text import split_sentences
from ragzip.types import Passage, content_id

HOTPOTQA = "hotpotqa"
SQUAD = "squad"
QED = "qed"  # NQ train passages with answer sentences (the trainers' reader below)


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


def demo_file(name: str) -> Path:
    """A file of the demo data shipped inside the package (``ragzip/demo/<name>``)."""
    return Path(str(resources.files("ragzip") / "demo" / name))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (``.gz`` too), blank lines skipped."""
    opener: Any = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


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
    """Each question's own passages plus ``n`` other passages of the same article, shuffled.

    The others share the question's ``metadata["title"]`` and are drawn from ``pool``: SQuAD's hard, same-topic
    distractor setting. Seeded per question, so a question's set does not depend on which other questions run.
    """
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


__all__ = ["HOTPOTQA", "QED", "SQUAD", "Paragraph", "PassageSets", "QAExample", "Question", "corpus", "demo_file",
           "five_passages", "gold_or_anchor", "held_out_ids", "load_hotpotqa", "load_qa", "load_questions", "make_passage",
           "parse_record", "passage_sets", "passage_text", "read_jsonl", "recall", "same_article_distractors", "select",
           "split_holdout"]


# ============================================================================= training questions with sentence labels
# What the trainers read: HotpotQA (supporting facts), QED (NQ train with answer sentences) and SQuAD (v1.1 / v2.0)
# train files, as questions whose passages carry one 0/1 label per sentence, and one seeded held-out split.
@dataclass
class Paragraph:
    """One passage of one question, with a 0/1 label per sentence.

    ``anchor`` marks a passage that is always trained on even with no positive sentence (a SQuAD 2.0 unanswerable
    question's own paragraph: the hard "nothing here answers it" negative).
    """

    query: str
    title: str
    sentences: list[str]
    labels: list[int]
    anchor: bool = False

    @property
    def gold(self) -> bool:
        """Whether any sentence is labelled 1 (the paragraph holds part of the answer's evidence)."""
        return any(self.labels)

    def as_distractor(self, query: str) -> Paragraph:
        """This paragraph as an all-negative distractor of another question (``query``)."""
        return Paragraph(query, self.title, self.sentences, [0] * len(self.sentences))


@dataclass
class Question:
    """One training question with its labelled paragraphs (gold and distractors), as the trainers read it.

    ``reconstructed`` marks a HotpotQA record rebuilt from another source, whose labels may be shifted (held-out
    splits prefer verbatim ones); ``source`` is :data:`HOTPOTQA`, :data:`QED` or :data:`SQUAD`.
    """

    id: str
    query: str
    paragraphs: list[Paragraph]
    reconstructed: bool = False
    source: str = HOTPOTQA


def _records(path: str | Path) -> Iterable[dict[str, Any]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def load_questions(paths: str | Path | Sequence[str | Path], limit: int | None = None) -> list[Question]:
    """Read training questions from HotpotQA, QED (NQ train) and SQuAD (v1.1/v2.0) JSONL files, ``.gz`` or not.

    The record shape is detected per file: ``supporting_facts`` = HotpotQA (positives: the supporting-fact
    sentences), ``sentence_starts`` = QED (positives: ``answer_sentence_idx``), ``answer_starts`` or ``is_impossible``
    = SQuAD (positives: the sentences the answer span overlaps, split by ragzip's own splitter as at inference; other
    paragraphs of the same article that do not contain the answer are its distractors; an unanswerable question's
    own paragraph is an all-negative anchor). ``limit`` caps each file.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    questions: list[Question] = []
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"--data {str(path)!r}: no such file. Pass HotpotQA, QED or SQuAD train JSONL (.gz ok), "
                             "e.g. ../shared/data/hotpotqa_train.jsonl.")
        records = list(_records(path))[: limit or None]
        if not records:
            raise InputError(f"no records in {path}; expected HotpotQA, QED or SQuAD-style JSONL.")
        first = records[0]
        if "supporting_facts" in first:
            questions += _hotpot_questions(records)
        elif "sentence_starts" in first:
            questions += _qed_questions(records)
        elif "answer_starts" in first or "is_impossible" in first:
            questions += _squad_questions(records)
        else:
            raise InputError(f"{path}: unknown record shape (keys {sorted(first)[:8]}); expected HotpotQA "
                             "(supporting_facts), QED (sentence_starts) or SQuAD (answer_starts).")
    return questions


def load_hotpotqa(path: str | Path, limit: int | None = None) -> list[Question]:
    """Read HotpotQA-style JSONL (``question``, ``context`` = [[title, [sentences]]], ``supporting_facts``)."""
    return load_questions([path], limit)


def _hotpot_questions(records: Sequence[dict[str, Any]]) -> list[Question]:
    questions = []
    for rec in records:
        facts = {(t, int(i)) for t, i in rec.get("supporting_facts", [])}
        paragraphs = []
        for title, sentences in rec["context"]:
            keep = [(k, s) for k, s in enumerate(sentences) if s.strip()]
            if not keep:
                continue
            paragraphs.append(Paragraph(rec["question"], title, [s.strip() for _, s in keep],
                                        [int((title, k) in facts) for k, _ in keep]))
        questions.append(Question(str(rec.get("id", len(questions))), rec["question"], paragraphs,
                                  bool(rec.get("reconstructed", False)), HOTPOTQA))
    return questions


def _qed_questions(records: Sequence[dict[str, Any]]) -> list[Question]:
    questions = []
    for rec in records:
        text, starts = rec["context"], list(rec["sentence_starts"]) or [0]
        bounds = list(zip(starts, [*starts[1:], len(text)], strict=True))
        gold = {int(i) for i in rec.get("answer_sentence_idx", [])}
        pairs = [(text[a:b].strip(), int(k in gold)) for k, (a, b) in enumerate(bounds)]
        pairs = [(s, lab) for s, lab in pairs if s]
        if not pairs or not any(lab for _, lab in pairs):
            continue
        para = Paragraph(rec["question"], rec.get("title", ""), [s for s, _ in pairs], [lab for _, lab in pairs])
        questions.append(Question(str(rec["id"]), rec["question"], [para], source=QED))
    return questions


def _squad_questions(records: Sequence[dict[str, Any]]) -> list[Question]:
    splits: dict[str, list[Any]] = {}
    by_title: dict[str, list[str]] = {}
    for rec in records:
        if rec["context"] not in splits:
            splits[rec["context"]] = split_sentences(rec["context"])
            by_title.setdefault(rec.get("title", ""), []).append(rec["context"])
    questions = []
    for rec in records:
        context, title = rec["context"], rec.get("title", "")
        sentences = splits[context]
        impossible = bool(rec.get("is_impossible"))
        labels = [0] * len(sentences)
        if not impossible:
            for answer, start in zip(rec.get("answers", []), rec.get("answer_starts", []), strict=False):
                end = start + len(answer)
                for k, s in enumerate(sentences):
                    if s.start < end and start < s.end:
                        labels[k] = 1
            if not any(labels):
                continue
        own = Paragraph(rec["question"], title.replace("_", " "), [s.text for s in sentences], labels,
                        anchor=impossible)
        answers = [a.lower() for a in rec.get("answers", []) + rec.get("plausible_answers", []) if a.strip()]
        others = [
            Paragraph(rec["question"], title.replace("_", " "), [s.text for s in splits[c]], [0] * len(splits[c]))
            for c in by_title[title] if c != context and not any(a in c.lower() for a in answers)
        ]
        questions.append(Question(str(rec["id"]), rec["question"], [own, *others], source=SQUAD))
    return questions


def split_holdout(questions: list[Question], n: int, seed: int) -> tuple[list[Question], list[Question]]:
    """Hold out ``n`` questions of every source, for checkpoint choice and calibration.

    Verbatim HotpotQA records are held out first (reconstructed ones may carry shifted labels). The split is seeded
    by ``seed`` and returned as ``(train, held out)``. A held-out QED question has only its own passage; it gets four
    other held-out QED passages as all-negative distractors, so that every held-out question is a five-passage set.
    """
    rng = random.Random(seed)
    held: set[str] = set()
    for source in sorted({q.source for q in questions}):
        pool = [q for q in questions if q.source == source]
        verbatim = [q for q in pool if not q.reconstructed]
        rng.shuffle(verbatim)
        ids = {q.id for q in verbatim[:n]}
        if len(ids) < n:
            rest = [q for q in pool if q.id not in ids]
            rng.shuffle(rest)
            ids |= {q.id for q in rest[: n - len(ids)]}
        held |= ids
    train_qs = [q for q in questions if q.id not in held]
    held_qs = [q for q in questions if q.id in held]
    nq = [q for q in held_qs if q.source == QED]
    for i, q in enumerate(nq):
        neighbours = [nq[(i + j) % len(nq)].paragraphs[0].as_distractor(q.query) for j in range(1, 5) if len(nq) > j]
        q.paragraphs.extend(passage_sets(q.paragraphs, gold_or_anchor, borrow=neighbours.copy).borrowed)
    return train_qs, held_qs


def held_out_ids(paths: Sequence[str | Path], n: int, seed: int, source: str) -> set[str]:
    """Ids of the ``source`` questions :func:`split_holdout` holds out of ``paths`` (``n`` per source, ``seed``).

    These are the training questions a model trained on these files with the same ``--holdout`` and ``--seed`` never
    saw (benchmarks calibrate and compare on them, never on dev).
    """
    _, held = split_holdout(load_questions(paths), n, seed)
    return {q.id for q in held if q.source == source}


def gold_or_anchor(paragraph: Paragraph) -> bool:
    """Whether a training paragraph goes into every set that holds its question's evidence: gold, or an anchor."""
    return paragraph.gold or paragraph.anchor


T = TypeVar("T")


@dataclass
class PassageSets(Generic[T]):
    """One question's passages sorted for set building (see :func:`passage_sets`).

    Args:
        gold: The passages every set with evidence holds, in context order.
        distractors: The other passages: the question's own in context order, then the borrowed ones (shuffled
            together when :func:`passage_sets` was given ``shuffle``).
        borrowed: The distractors taken from ``borrow``, in the order taken.
        size: Passages per set.
    """

    gold: list[T]
    distractors: list[T]
    borrowed: list[T]
    size: int = 5

    def with_gold(self, rng: random.Random | None = None) -> list[T]:
        """The gold passages plus the first distractors, ``size`` in all (all the gold ones if there are more).

        In that order, or shuffled with ``rng``.
        """
        chosen = [*self.gold, *self.distractors[: max(0, self.size - len(self.gold))]]
        if rng is not None:
            rng.shuffle(chosen)
        return chosen

    def distractors_only(self, rng: random.Random | None = None) -> list[T]:
        """The first ``size`` distractors (fewer when there are fewer), in that order or shuffled with ``rng``."""
        chosen = self.distractors[: self.size]
        if rng is not None:
            rng.shuffle(chosen)
        return chosen


def passage_sets(passages: Sequence[T], is_gold: Callable[[T], bool], *, size: int = 5,
                 borrow: Callable[[], Iterable[T]] | None = None, accept: Callable[[T], bool] | None = None,
                 key: Callable[[T], Hashable] | None = None, shuffle: random.Random | None = None) -> PassageSets[T]:
    """A question's sets of ``size`` passages: gold plus distractors, and distractors only.

    This builds the sets the extractive trainer evaluates on (:func:`five_passages`), the set-level relevance gate
    fits on and the abstractive trainer learns from. Where a question has fewer than ``size`` distractors of its own
    (an NQ/QED question has none) it borrows other questions' passages; how they are drawn and which are unfit differ
    between those uses, so they are arguments.

    Args:
        passages: The question's own passages, in context order.
        is_gold: Whether a passage goes into every set with evidence (:func:`gold_or_anchor` for training paragraphs).
        size: Passages per set.
        borrow: Called only when there are fewer than ``size`` distractors; candidates are taken from what it returns
            one at a time, and none is drawn once there are ``size``, so a generator over an rng consumes only the
            draws it needs.
        accept: Skips the borrowed candidates it rejects (those that hold the answer, say).
        key: Skips a borrowed candidate with the key of one of ``passages`` or of one borrowed before.
        shuffle: Shuffles the distractors, own and borrowed together, with this rng.

    Example:
        >>> sets = passage_sets(["gold", "a", "b"], lambda p: p == "gold", size=3, borrow=lambda: ["a", "c", "d"],
        ...                     key=str)
        >>> sets.with_gold(), sets.distractors_only(), sets.borrowed
        (['gold', 'a', 'b'], ['a', 'b', 'c'], ['c'])
    """
    gold = [p for p in passages if is_gold(p)]
    own = [p for p in passages if not is_gold(p)]
    borrowed: list[T] = []
    if borrow is not None and len(own) < size:
        seen: set[Hashable] = {key(p) for p in passages} if key is not None else set()
        for candidate in borrow():
            mark = key(candidate) if key is not None else None
            if mark in seen or (accept is not None and not accept(candidate)):
                continue
            if key is not None:
                seen.add(mark)
            borrowed.append(candidate)
            if len(own) + len(borrowed) >= size:
                break
    distractors = own + borrowed
    if shuffle is not None:
        shuffle.shuffle(distractors)
    return PassageSets(gold, distractors, borrowed, size)


def five_passages(question: Question) -> list[Paragraph]:
    """The gold paragraphs plus the first distractors, five in all, in context order: a stand-in for top-5 retrieval."""
    chosen = {id(p) for p in passage_sets(question.paragraphs, gold_or_anchor).with_gold()}
    return [p for p in question.paragraphs if id(p) in chosen]
