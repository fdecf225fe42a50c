"""'Not in my documents': how often the pipeline says "I don't know" when the documents cannot answer, and how often
the switch costs an answerable question its answer.

The switch is ``compressor: {type: extractive, selective: true}`` plus ``generator: {no_evidence_reply: ...}``: when
no sentence of the retrieved passages reaches the classifier's threshold, the compressor keeps nothing and the
pipeline replies the configured text without asking the reader (:func:`ragzip.pipeline.answer_or_decline`).

Three conditions on the same HotpotQA dev questions (seeded sample as ``ragzip bench`` draws it; yes/no questions
left out, their answer is not a span):

* ``not_in_docs``: only the question's distractor paragraphs, minus any that contain a gold answer string. The
  documents cannot answer: the right reply is "don't know".
* ``gold``: only the question's two gold (supporting) paragraphs: answerable; a "don't know" is a false one.
* ``gold_and_distractors``: all ten paragraphs (HotpotQA's distractor setting): answerable, with noise.

For each: the "don't know" rate with the switch; the reader's accuracy without and with it; ``answers_lost`` (answered
correctly without the switch, "don't know" with it); ``ans_in_ctx_lost`` (the compressed context held a gold answer
string, but the switch declined). Thresholds other than the configured one are swept on the classifier's best
sentence score (no second reader pass): the rate of "don't know" per condition at each, and the answerable
questions' right answers (without the switch, at the configured threshold) that it would turn into "don't know".

Run (about 4.5 minutes on 2 CPU threads; the shipped classifier's default is a relative rule, so pass its
calibrated absolute threshold):
    python benchmarks/dont_know.py --data ../shared/data/hotpotqa_dev.jsonl --limit 100 --threshold 0.18 \
        --threads 2 --out benchmarks/results/dont_know.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("ragzip.dont_know")

REPLY = "I don't know."
SWEEP = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)


def conditions(examples: list[Any]) -> tuple[list[Any], dict[str, list[list[Any]]]]:
    """The questions kept (answer is a span, at least one distractor without the answer) and their passage lists."""
    from ragzip.metrics import has_answer

    kept, out = [], {"not_in_docs": [], "gold": [], "gold_and_distractors": []}
    for ex in examples:
        if any(a.strip().lower() in ("yes", "no") for a in ex.answers):
            continue
        gold = [p for p in ex.passages if p.id in ex.gold_ids]
        distractors = [p for p in ex.passages if p.id not in ex.gold_ids and not has_answer(p.text, ex.answers)]
        if not gold or not distractors:
            continue
        kept.append(ex)
        out["not_in_docs"].append(distractors)
        out["gold"].append(gold)
        out["gold_and_distractors"].append(list(ex.passages))
    return kept, out


class _Cached:
    """The generator's answers already decoded for these questions (same contexts), served by question."""

    def __init__(self, config: Any, questions: list[str], answers: list[Any]) -> None:
        self.config = config
        self.by_question = dict(zip(questions, answers))

    def answer_batch(self, questions: list[str], contexts: list[Any]) -> list[Any]:
        return [self.by_question[q] for q in questions]


def best_scores(contexts: list[Any]) -> list[float]:
    """The classifier's best sentence score per question (what the switch compares with the threshold)."""
    out = []
    for ctx in contexts:
        scores = [u.score for r in ctx.results for u in r.units if u.score is not None]
        out.append(max(scores) if scores else float("-inf"))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    from ragzip import build_compressor
    from ragzip.data import load_qa, select
    from ragzip.generation import GeneratorConfig, HFGenerator
    from ragzip.metrics import has_answer
    from ragzip.pipeline import answer_or_decline
    from ragzip.types import CompressedContext

    start = time.perf_counter()
    examples, by_condition = conditions(select(load_qa(args.data), args.limit * 2, seed=args.seed))
    examples = examples[: args.limit]
    by_condition = {k: v[: args.limit] for k, v in by_condition.items()}
    questions = [ex.question for ex in examples]
    generator = HFGenerator(GeneratorConfig(model=args.generator, no_evidence_reply=REPLY))
    # The compressor without the switch (selective: false keeps the best sentence when none passes) and with it.
    # They differ only where no sentence passes the threshold: there the switch keeps nothing. So each condition is
    # scored once, and the switch's contexts are derived (checked against the real switch on the first questions).
    extra = {"threshold": args.threshold} if args.threshold is not None else {}
    plain = build_compressor({"type": "extractive", **extra})
    plain.bind(generator)
    switch = build_compressor({"type": "extractive", "selective": True, **extra})
    switch.bind(generator)
    threshold = plain.threshold
    if threshold is None:
        raise SystemExit("the extractive model in use has no absolute threshold (a relative rule decides): pass "
                         "--threshold, the evidence floor under which `selective: true` keeps nothing.")
    result: dict[str, Any] = {
        "data": str(args.data), "n": len(examples), "seed": args.seed, "generator": args.generator,
        "compressor": {"type": "extractive", "selective": True, "threshold": threshold}, "reply": REPLY,
        "conditions": {}, "sweep": [],
    }
    best_by_condition: dict[str, list[float]] = {}
    correct_by_condition: dict[str, list[bool]] = {}
    per_question: dict[str, list[dict[str, Any]]] = {}
    for name, passages in by_condition.items():
        t0 = time.perf_counter()
        plain_ctx = plain.compress_batch(questions, passages)
        compress_s = time.perf_counter() - t0
        best = best_scores(plain_ctx)
        switch_ctx = [CompressedContext(c.query, (), c.method, reason="selective") if b < threshold else c
                      for c, b in zip(plain_ctx, best)]
        check = switch.compress_batch(questions[: args.check], passages[: args.check])
        assert [c.has_evidence for c in check] == [c.has_evidence for c in switch_ctx[: args.check]], name
        plain_answers = generator.answer_batch(questions, plain_ctx)  # the reader always answers
        # Where the switch does not decline, its context is the plain one: the reader's answer is the same, so it is
        # reused rather than decoded twice (greedy decoding); the switch's own logic is the pipeline's.
        switch_answers = answer_or_decline(_Cached(generator.config, questions, plain_answers), questions, switch_ctx)
        golds = [ex.answers for ex in examples]
        declined = [a.text == REPLY and not c.has_evidence for a, c in zip(switch_answers, switch_ctx)]
        acc_plain = [has_answer(a.text, g) for a, g in zip(plain_answers, golds)]
        acc_switch = [0.0 if d else has_answer(a.text, g) for a, d, g in zip(switch_answers, declined, golds)]
        in_ctx = [has_answer(c.text, g) > 0 for c, g in zip(plain_ctx, golds)]
        n = len(examples)
        best_by_condition[name] = best
        correct_by_condition[name] = [a > 0 for a in acc_plain]
        per_question[name] = [{"best": round(b, 4), "correct_without_switch": a > 0, "ans_in_ctx": c}
                              for b, a, c in zip(best, acc_plain, in_ctx)]
        result["conditions"][name] = {
            "answerable": name != "not_in_docs",
            "dont_know_rate": round(sum(declined) / n, 4),
            "acc_without_switch": round(sum(acc_plain) / n, 4),
            "acc_with_switch": round(sum(acc_switch) / n, 4),
            "answers_lost": sum(1 for d, a in zip(declined, acc_plain) if d and a),
            "ans_in_ctx_lost": sum(1 for d, c in zip(declined, in_ctx) if d and c),
            "ans_in_ctx_without_switch": round(sum(in_ctx) / n, 4),
            "mean_passages": round(sum(len(p) for p in passages) / n, 2),
            "compress_s": round(compress_s / n, 4),
        }
        logger.info("%s: %s", name, result["conditions"][name])
    for t in sorted({*SWEEP, threshold}):
        row: dict[str, Any] = {"threshold": t}
        for name, best in best_by_condition.items():
            row[f"{name}_dont_know"] = round(sum(b < t for b in best) / len(best), 4)
            if name != "not_in_docs":  # answerable: right answers (without the switch) it would turn into "don't know"
                row[f"{name}_answers_lost"] = sum(1 for b, ok in zip(best, correct_by_condition[name]) if b < t and ok)
        result["sweep"].append(row)
    result["questions"] = [{"id": ex.id, **{name: rows[i] for name, rows in per_question.items()}}
                           for i, ex in enumerate(examples)]
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["threads"] = args.threads
    result["python"] = platform.python_version()
    result["command"] = "python " + " ".join(sys.argv)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="HotpotQA-style dev JSONL (distractor setting)")
    parser.add_argument("--limit", type=int, default=100, help="questions (after leaving out yes/no ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=None,
                        help="the extractive threshold; empty: the shipped model's calibrated default")
    parser.add_argument("--generator", default="embedded:smollm2-135m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check", type=int, default=5,
                        help="questions per condition also run through the real `selective: true` compressor")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
