"""Measure the abstractive compressor on HotpotQA dev with given passages.

Run ``ragzip evaluate abstractive`` (or ``python -m ragzip.plugins.abstractive.evaluate``).

Two settings per question, built from the question's own paragraphs with a seeded shuffle:

- ``gold``: its two supporting paragraphs plus ``--distractors`` distractor paragraphs, shuffled;
- ``distractors``: ``2 + --distractors`` distractor paragraphs only (the answer is not in them).

For each it reports the summary's tokens against the input's (the generator's tokenizer), the compress time, the
empty-summary rate, how often the faithfulness rule would drop a sentence, and with ``--answer`` the generator's
acc/F1 reading the full passages, the summary, and no context.

``--gate-sweep`` runs the relevance gate alone (no summarizer): the best sentence score of every input in both
settings, the empty rates at a range of thresholds and the ROC AUC. ``--heldout-train`` takes the questions the
shipped extractive classifier held out from its training (``--data`` must then be the HotpotQA train file): the
gate's default threshold was calibrated there.

Example:
    python -m ragzip.plugins.abstractive.evaluate --data ../shared/data/hotpotqa_dev.jsonl --limit 50 --answer \\
        --out /tmp/abs_eval.json
    python -m ragzip.plugins.abstractive.evaluate --gate-sweep --heldout-train \\
        --data ../shared/data/hotpotqa_train.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ragzip.compressor import build_compressor
from ragzip.data import load_hotpotqa, load_qa, select, split_holdout
from ragzip.errors import ModelNotFoundError
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.metrics import score
from ragzip.plugins.abstractive import AbstractiveCompressor, AbstractiveConfig
from ragzip.plugins.abstractive.compressor import support
from ragzip.plugins.abstractive.modeling import split_sentences

logger = logging.getLogger("ragzip.abstractive.evaluate")


def _settings(example: Any, rng: random.Random, n_distractors: int) -> dict[str, list[Any]]:
    gold = [p for p in example.passages if p.id in example.gold_ids]
    other = [p for p in example.passages if p.id not in example.gold_ids]
    with_gold = gold + rng.sample(other, min(n_distractors, len(other)))
    rng.shuffle(with_gold)
    only = rng.sample(other, min(n_distractors + len(gold), len(other)))
    return {"gold": with_gold, "distractors": only}


def _heldout_train(path: str, examples: list[Any]) -> list[Any]:
    """The training questions the shipped extractive classifier held out (its card's holdout size and seed)."""
    folder = build_compressor({"type": "extractive"}).model_folder()  # the shipped classifier, via the registry
    if folder is None:
        raise ModelNotFoundError("the shipped extractive classifier is missing (plugins/extractive/artifacts/default); "
                                 "restore it from the repository to evaluate on its held-out training split.")
    card = json.loads((folder / "config.json").read_text(encoding="utf-8"))["training"]
    # split_holdout holds out that many questions *per source*; a card without holdout_per_source trained on
    # HotpotQA alone, so its holdout_questions is that number
    _, held = split_holdout(load_hotpotqa(path), card.get("holdout_per_source", card["holdout_questions"]), card["seed"])
    ids = {q.id for q in held}
    return [e for e in examples if e.id in ids]


def gate_sweep(examples: list[Any], rng: random.Random, n_distractors: int) -> dict[str, Any]:
    """The gate's best sentence score per input, and the empty rates it gives at a range of thresholds."""
    compressor = AbstractiveCompressor(AbstractiveConfig())  # only its gate is used: the summarizer is never loaded
    best: dict[str, list[float]] = {"gold": [], "distractors": []}
    for ex in examples:
        for setting, passages in _settings(ex, rng, n_distractors).items():
            if passages:
                best[setting].extend(compressor.gate_scores([ex.question], [passages]))
    gold, only = best["gold"], best["distractors"]
    auc = statistics.fmean((g > d) + 0.5 * (g == d) for g in gold for d in only)
    sweep = [{"threshold": t / 20, "empty_gold": statistics.fmean(x < t / 20 for x in gold),
              "empty_distractors": statistics.fmean(x < t / 20 for x in only)} for t in range(1, 20)]
    return {"n_gold": len(gold), "n_distractors": len(only), "roc_auc": auc, "sweep": sweep, "best": best}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ragzip evaluate abstractive")
    p.add_argument("--data", default="../shared/data/hotpotqa_dev.jsonl")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distractors", type=int, default=3, help="distractor paragraphs beside the two gold ones")
    p.add_argument("--adapter", default="auto")
    p.add_argument("--max-summary-tokens", type=int, default=128)
    p.add_argument("--empty-threshold", type=float, default=None)
    p.add_argument("--answer", action="store_true", help="also answer with the generator (full / summary / none)")
    p.add_argument("--relevance-gate", choices=["auto", "set", "extractive", "none"], default="auto")
    p.add_argument("--gate-threshold", type=float, default=None, help="empty: the config's default")
    p.add_argument("--gate-sweep", action="store_true", help="score with the relevance gate only (no summarizer)")
    p.add_argument("--heldout-train", action="store_true",
                   help="the questions the shipped extractive classifier held out (with a HotpotQA train --data)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.heldout_train:
        examples = [e for e in _heldout_train(args.data, load_qa(args.data)) if len(e.gold_ids) == 2]
    else:
        examples = [e for e in select(load_qa(args.data), args.limit, args.seed) if len(e.gold_ids) == 2]
    rng = random.Random(args.seed)
    if args.gate_sweep:
        report = {"data": args.data, "heldout_train": args.heldout_train, "n": len(examples), "seed": args.seed,
                  **gate_sweep(examples, rng, args.distractors)}
        print(json.dumps({k: v for k, v in report.items() if k != "best"}, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
        return 0
    generator = HFGenerator(GeneratorConfig())
    gate_cfg = {"relevance_gate": args.relevance_gate}
    if args.gate_threshold is not None:
        gate_cfg["gate_threshold"] = args.gate_threshold
    compressor = AbstractiveCompressor(AbstractiveConfig(adapter=args.adapter, empty_threshold=args.empty_threshold,
                                                         max_summary_tokens=args.max_summary_tokens, **gate_cfg))
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
                   "gated": bool(ctx.extra.get("gated")), "gate_score": ctx.extra.get("gate_score"),
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
                              "empty_threshold": compressor._threshold(), "relevance_gate": args.relevance_gate,
                              "gate": compressor.gate_kind, "gate_threshold": compressor.gate_threshold, "settings": {}}
    for setting in ("gold", "distractors"):
        sub = [r for r in rows if r["setting"] == setting]
        if not sub:
            continue

        def mean(key: str, rows: list[dict[str, Any]] = sub) -> float:
            return statistics.fmean(float(r[key]) for r in rows)

        entry = {"n": len(sub), "tokens_in": mean("tokens_in"), "tokens_summary": mean("tokens_summary"),
                 "summary_share": sum(r["tokens_summary"] for r in sub) / max(sum(r["tokens_in"] for r in sub), 1),
                 "empty_rate": mean("empty"), "gated_rate": mean("gated"), "truncated_rate": mean("truncated"),
                 "echo_rate": mean("echo"),
                 "compress_s": mean("compress_s"), "answer_in_summary": mean("answer_in_summary"),
                 "faithfulness_would_fire": statistics.fmean(r["unsupported_sentences"] > 0 for r in sub),
                 "p_end_median": statistics.median([r["p_end"] for r in sub if r["p_end"] is not None] or [math.nan])}
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
