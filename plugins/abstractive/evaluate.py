"""Measure the abstractive compressor on HotpotQA dev with given passages.

Run ``python -m ragzip.plugins.abstractive.evaluate``.

Two settings per question, built from the question's own paragraphs with a seeded shuffle:

- ``gold``: its two supporting paragraphs plus ``--distractors`` distractor paragraphs, shuffled;
- ``distractors``: ``2 + --distractors`` distractor paragraphs only (the answer is not in them).

For each it reports the summary's tokens against the input's (the generator's tokenizer), the compress time, the
empty-summary rate, how often the faithfulness rule would drop a sentence, and with ``--answer`` the generator's
acc/F1 reading the full passages, the summary, and no context.

Example:
    python -m ragzip.plugins.abstractive.evaluate --data ../shared/data/hotpotqa_dev.jsonl --limit 50 --answer \\
        --out /tmp/abs_eval.json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("ragzip.abstractive.evaluate")


def _settings(example: Any, rng: random.Random, n_distractors: int) -> dict[str, list[Any]]:
    gold = [p for p in example.passages if p.id in example.gold_ids]
    other = [p for p in example.passages if p.id not in example.gold_ids]
    with_gold = gold + rng.sample(other, min(n_distractors, len(other)))
    rng.shuffle(with_gold)
    only = rng.sample(other, min(n_distractors + len(gold), len(other)))
    return {"gold": with_gold, "distractors": only}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ragzip.plugins.abstractive.evaluate")
    p.add_argument("--data", default="../shared/data/hotpotqa_dev.jsonl")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distractors", type=int, default=3, help="distractor paragraphs beside the two gold ones")
    p.add_argument("--adapter", default="auto")
    p.add_argument("--max-summary-tokens", type=int, default=128)
    p.add_argument("--empty-threshold", type=float, default=None)
    p.add_argument("--answer", action="store_true", help="also answer with the generator (full / summary / none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import torch

    from ragzip.data import load_qa, select
    from ragzip.generation import GeneratorConfig, HFGenerator
    from ragzip.metrics import score
    from ragzip.plugins.abstractive import AbstractiveCompressor, AbstractiveConfig
    from ragzip.plugins.abstractive.compressor import support
    from ragzip.plugins.abstractive.modeling import split_sentences

    torch.set_num_threads(args.threads)
    examples = [e for e in select(load_qa(args.data), args.limit, args.seed) if len(e.gold_ids) == 2]
    rng = random.Random(args.seed)
    generator = HFGenerator(GeneratorConfig())
    compressor = AbstractiveCompressor(AbstractiveConfig(adapter=args.adapter, empty_threshold=args.empty_threshold,
                                                         max_summary_tokens=args.max_summary_tokens))
    compressor.bind(generator)
    compressor.compress("warm-up?", ["Warm-up passage."])
    rows: list[dict[str, Any]] = []
    for n, ex in enumerate(examples):
        for setting, passages in _settings(ex, rng, args.distractors).items():
            ctx = compressor.compress(ex.question, passages)
            sentences = split_sentences(ctx.summary or "")
            unsupported = sum(support(s, [q.text for q in passages])[0] < 0.6 for s in sentences)
            row = {"id": ex.id, "setting": setting, "tokens_in": ctx.tokens_before, "tokens_summary": ctx.tokens_after,
                   "empty": bool(ctx.extra.get("empty")), "p_end": ctx.extra.get("p_end"),
                   "truncated": bool(ctx.extra.get("truncated")), "echo": bool(ctx.extra.get("echo")),
                   "compress_s": ctx.compress_s, "unsupported_sentences": unsupported, "sentences": len(sentences),
                   "answer_in_summary": score(ctx.text, list(ex.answers))["acc"] if ctx.text else 0.0,
                   "summary": ctx.text}
            if args.answer:
                full = "\n\n".join(q.text for q in passages)
                for label, context in (("full", full), ("summary", ctx), ("no_context", None)):
                    if label == "no_context" and setting == "distractors":
                        continue
                    g = generator.answer(ex.question, context)
                    row[f"{label}_answer"] = g.text
                    row.update({f"{label}_{k}": v for k, v in score(g.text, list(ex.answers)).items()})
            rows.append(row)
        logger.info("%d/%d done (%.1f s compress, last summary %d tokens, empty=%s)", n + 1, len(examples),
                    rows[-2]["compress_s"], rows[-2]["tokens_summary"], rows[-2]["empty"])
    report: dict[str, Any] = {"data": args.data, "n": len(examples), "seed": args.seed,
                              "distractors": args.distractors, "adapter": str(compressor.adapter_path()),
                              "empty_threshold": compressor._threshold(), "settings": {}}
    for setting in ("gold", "distractors"):
        sub = [r for r in rows if r["setting"] == setting]
        if not sub:
            continue

        def mean(key: str, rows: list[dict[str, Any]] = sub) -> float:
            return statistics.fmean(float(r[key]) for r in rows)

        entry = {"n": len(sub), "tokens_in": mean("tokens_in"), "tokens_summary": mean("tokens_summary"),
                 "summary_share": sum(r["tokens_summary"] for r in sub) / max(sum(r["tokens_in"] for r in sub), 1),
                 "empty_rate": mean("empty"), "truncated_rate": mean("truncated"), "echo_rate": mean("echo"),
                 "compress_s": mean("compress_s"), "answer_in_summary": mean("answer_in_summary"),
                 "faithfulness_would_fire": statistics.fmean(r["unsupported_sentences"] > 0 for r in sub),
                 "p_end_median": statistics.median(r["p_end"] for r in sub)}
        for label in ("full", "summary", "no_context"):
            if f"{label}_acc" in sub[0]:
                entry[f"{label}_acc"] = mean(f"{label}_acc")
                entry[f"{label}_f1"] = mean(f"{label}_f1")
        report["settings"][setting] = entry
    report["stats"] = compressor.stats()
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({**report, "rows": rows}, handle, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    logger.info("finished in %.0f s", time.perf_counter() - t0)
    sys.exit(rc)
