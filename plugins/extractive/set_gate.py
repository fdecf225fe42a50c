"""``ragzip train extractive --fit-set-gate``: fit the set-level relevance gate on held-out training questions.

The gate (:class:`ragzip.relevance.LogisticSetGate`) reads the classifier's sentence scores of a whole set of
passages and says whether the set holds the evidence. It is fitted on the questions the classifier held out of its own
training (same ``--holdout``/``--seed`` split of the same ``--data``; the dev files are never read for fitting):

- a set *with* evidence: the question's gold passages plus distractors, five in all (HotpotQA: its own distractors;
  SQuAD: other paragraphs of the same article; NQ/QED: other held-out questions' passages);
- a set *without*: five distractors only; a SQuAD 2.0 unanswerable question's own paragraph counts as one.

Five-fold cross-validation gives out-of-fold probabilities; the threshold is the largest that gates at most
``--max-gold-gated`` of the with-evidence sets out of fold; the final weights are fitted on all sets. The same is done
for the best-sentence rule (the best sentence's score alone) so the two are compared on equal terms. With ``--dev FILE
...`` the fitted gate is then measured (never refitted) on dev sets built the same way from HotpotQA, SQuAD and NQ dev
files.

Example:
    ragzip train extractive --fit-set-gate --data ../shared/data/hotpotqa_train.jsonl \
        ../shared/data/qed_nq_train.jsonl.gz ../shared/data/squad_train_partial.jsonl.gz --model default
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ragzip.artifacts import WEIGHTS_NAME
from ragzip.data import (
    PassageSets,
    QAExample,
    gold_or_anchor,
    load_qa,
    load_questions,
    make_passage,
    passage_sets,
    same_article_distractors,
    select,
    split_holdout,
)
from ragzip.fsutil import sha256_file
from ragzip.plugins.extractive.compressor import ExtractiveCompressor
from ragzip.plugins.extractive.config import ExtractiveConfig
from ragzip.plugins.extractive.modeling import artifact_folder
from ragzip.relevance import GATE_FILE, LogisticSetGate, roc_auc, set_features, threshold_for
from ragzip.types import Passage

logger = logging.getLogger("ragzip.train.extractive.set_gate")
FOLDS = 5


def _passage(title: str, sentences: Sequence[str]) -> Passage:
    return make_passage(title, " ".join(sentences), "train")


def heldout_sets(questions: Sequence[Any], seed: int) -> list[tuple[str, list[Passage], int, str]]:
    """``(query, passages, label, source)``: one set with evidence and one without for every held-out question."""
    rng = random.Random(seed)
    out = []
    for q in questions:
        sets = passage_sets(q.paragraphs, gold_or_anchor)
        with_gold = sets.with_gold(rng)
        label = int(any(p.gold for p in with_gold))
        out.append((q.query, [_passage(p.title, p.sentences) for p in with_gold], label, q.source))
        if sets.distractors:
            out.append((q.query, [_passage(p.title, p.sentences) for p in sets.distractors_only()], 0, q.source))
    return out


def _dev_passage_sets(ex: QAExample, passages: list[Passage], pool: list[Passage],
                      rng: random.Random) -> PassageSets[Passage]:
    """``ex``'s passages, with other questions' passages (twenty drawn, those holding an answer skipped) as
    distractors where it has fewer than five."""
    answers = [a.lower() for a in ex.answers]
    return passage_sets(passages, lambda p: p.id in ex.gold_ids, borrow=partial(rng.sample, pool, min(20, len(pool))),
                        accept=lambda p: p.id not in ex.gold_ids and not any(a in p.text.lower() for a in answers))


def dev_sets(path: str, limit: int, seed: int) -> list[tuple[str, list[Passage], int, str]]:
    """Sets from a dev file: gold passage(s) plus distractors (label 1) and distractors only (label 0).

    HotpotQA: its own ten paragraphs; SQuAD: same-article paragraphs; NQ (one passage per question): other
    questions' passages. Label 1 means "holds a gold passage".
    """
    examples = load_qa(path)
    chosen = select(examples, limit, seed)
    rng = random.Random(seed)
    name = Path(path).name.split(".")[0]
    out = []
    pool = [p for ex in examples for p in ex.passages]
    if chosen and chosen[0].kind == "squad" and "squad" in name:
        extended = same_article_distractors(chosen, examples, 9, seed)
    else:
        extended = [list(ex.passages) for ex in chosen]
    for ex, passages in zip(chosen, extended, strict=True):
        if not any(p.id in ex.gold_ids for p in passages):
            continue
        sets = _dev_passage_sets(ex, passages, pool, rng)
        out.append((ex.question, sets.with_gold(rng), 1, name))
        if sets.distractors:
            out.append((ex.question, sets.distractors_only(), 0, name))
    return out


def score_sets(compressor: Any, sets: Sequence[tuple[str, list[Passage], int, str]],
               batch: int = 16) -> list[list[list[float]]]:
    scores: list[list[list[float]]] = []
    for start in range(0, len(sets), batch):
        chunk = sets[start:start + batch]
        scores += compressor.score_sentences([s[0] for s in chunk], [s[1] for s in chunk])
    return scores


def _best(scores: Sequence[Sequence[float]]) -> float:
    return max((x for row in scores for x in row if x == x), default=0.0)


def cross_validate(scores: Sequence[Any], labels: Sequence[int], seed: int, l2: float) -> list[float]:
    """Out-of-fold probabilities of a 5-fold split (folds by set index, seeded)."""
    order = list(range(len(scores)))
    random.Random(seed).shuffle(order)
    probs = [0.0] * len(scores)
    for fold in range(FOLDS):
        test = set(order[fold::FOLDS])
        train = [i for i in order if i not in test]
        gate = LogisticSetGate.fit([scores[i] for i in train], [labels[i] for i in train], l2=l2)
        for i in test:
            probs[i] = gate.probability(scores[i])
    return probs


def _rates(values: Sequence[float], labels: Sequence[int], threshold: float) -> dict[str, Any]:
    pos = [v for v, y in zip(values, labels, strict=True) if y]
    neg = [v for v, y in zip(values, labels, strict=True) if not y]
    return {"n_with": len(pos), "n_without": len(neg),
            "gated_with": round(sum(v < threshold for v in pos) / max(len(pos), 1), 4),
            "gated_without": round(sum(v < threshold for v in neg) / max(len(neg), 1), 4),
            "roc_auc": round(roc_auc(pos, neg), 4)}


def _by_source(values: Sequence[float], sets: Sequence[Any], threshold: float) -> dict[str, Any]:
    out = {}
    for source in sorted({s[3] for s in sets}):
        idx = [i for i, s in enumerate(sets) if s[3] == source]
        out[source] = _rates([values[i] for i in idx], [sets[i][2] for i in idx], threshold)
    return out


def fit_set_gate(args: Any) -> int:
    """Fit, calibrate and save the gate beside the classifier (``<model>/set_gate.json``); report to ``--gate-report``."""
    t0 = time.perf_counter()
    folder = artifact_folder(args.model)
    compressor = ExtractiveCompressor(ExtractiveConfig(model=str(folder), device=args.device or ""))
    _, held = split_holdout(load_questions(args.data, args.limit), args.holdout, args.seed)
    sets = heldout_sets(held, args.seed)
    labels = [s[2] for s in sets]
    logger.info("scoring %d held-out sets (%d with evidence)", len(sets), sum(labels))
    scores = score_sets(compressor, sets)
    oof = cross_validate(scores, labels, args.seed, args.gate_l2)
    best = [_best(s) for s in scores]
    gold_probs = [p for p, y in zip(oof, labels, strict=True) if y]
    threshold = threshold_for(gold_probs, args.max_gold_gated)
    best_threshold = threshold_for([b for b, y in zip(best, labels, strict=True) if y], args.max_gold_gated)
    threshold = math.floor(threshold * 1e4) / 1e4  # stored rounded down: never gates more than calibrated
    gate = LogisticSetGate.fit(scores, labels, l2=args.gate_l2, threshold=threshold)
    heldout = {"set_gate": {"threshold": round(threshold, 4), **_rates(oof, labels, threshold),
                            "by_source": _by_source(oof, sets, threshold)},
               "best_sentence": {"threshold": round(best_threshold, 4), **_rates(best, labels, best_threshold),
                                 "by_source": _by_source(best, sets, best_threshold)}}
    gate.training = {
        "data": ", ".join(Path(p).name for p in args.data), "holdout_per_source": args.holdout, "seed": args.seed,
        "sets": len(sets), "with_evidence": sum(labels), "l2": args.gate_l2, "max_gold_gated": args.max_gold_gated,
        "classifier": str(folder.name if args.model == "default" else folder), "heldout_out_of_fold": heldout,
        "classifier_weights_sha256": sha256_file(folder / WEIGHTS_NAME),
        "command": "ragzip train extractive " + " ".join(args.argv),
    }
    report: dict[str, Any] = {"heldout_train": heldout, "weights": dict(zip(gate.features, gate.weights,
                                                                              strict=True))}
    if args.dev:
        dev: dict[str, Any] = {}
        for path in args.dev:
            dsets = dev_sets(path, args.dev_limit, args.seed)
            dscores = score_sets(compressor, dsets)
            dlabels = [s[2] for s in dsets]
            name = dsets[0][3] if dsets else Path(path).name
            dev[name] = {"set_gate": _rates([gate.probability(s) for s in dscores], dlabels, gate.threshold),
                         "best_sentence": _rates([_best(s) for s in dscores], dlabels, best_threshold)}
            logger.info("dev %s: %s", name, dev[name])
        report["dev"] = dev
        gate.training["dev"] = dev
    out = Path(args.gate_out) if args.gate_out else folder / GATE_FILE
    gate.save(out)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["command"] = gate.training["command"]
    if args.gate_report:
        Path(args.gate_report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    logger.info("set gate saved to %s (%.0f s)", out, time.perf_counter() - t0)
    return 0


__all__ = ["dev_sets", "fit_set_gate", "heldout_sets", "set_features"]
