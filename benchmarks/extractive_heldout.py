"""Compare extractive classifiers on held-out *training* questions (never dev), in HotpotQA's distractor setting.

The questions are the 100 HotpotQA training questions the classifiers trained by ``ragzip train extractive`` held out
(``split_holdout`` over the three training files, 100 per source, seed 0), each with all ten of its paragraphs. Each
classifier selects under budgets of 64, 128 and 256 tokens; the share of questions whose answer string
(``ans_in_ctx``) and whose every supporting fact (``sf_all``) survive is reported.

    python benchmarks/extractive_heldout.py --models runs/extractive-v3 default --out benchmarks/results/extractive_heldout_train.json

About 1 minute per classifier on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ragzip.data import HOTPOTQA, held_out_ids, load_qa
from ragzip.evidence import evidence, mean_defined
from ragzip.plugins.extractive import ExtractiveCompressor, ExtractiveConfig

TRAIN_FILES = ("hotpotqa_train.jsonl", "qed_nq_train.jsonl.gz", "squad_train_partial.jsonl.gz")
BUDGETS = (64, 128, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="folder with the three training files")
    parser.add_argument("--models", nargs="+", default=["default"], help="classifiers (folders or `default`)")
    parser.add_argument("--out", default="benchmarks/results/extractive_heldout_train.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    start = time.time()
    held_ids = held_out_ids([data / name for name in TRAIN_FILES], 100, 0, HOTPOTQA)
    examples = [e for e in load_qa(data / "hotpotqa_train.jsonl") if e.id in held_ids]
    queries = [e.question for e in examples]
    passages = [list(e.passages) for e in examples]
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for model in args.models:
        compressor = ExtractiveCompressor(ExtractiveConfig(model=model))
        compressor.memoize_scores()  # the three budgets select from one scoring pass
        row = table.setdefault(model, {})
        for budget in BUDGETS:
            contexts = compressor.with_selection(max_tokens=budget).compress_batch(queries, passages)
            kept = [evidence(c.text, e.answers, e.supporting) for c, e in zip(contexts, examples, strict=True)]
            row[str(budget)] = {metric: round(value, 4) if value is not None else None for metric, value in (
                (m, mean_defined([k[m] for k in kept])) for m in ("ans_in_ctx", "sf_all"))}
        print(f"{model}: {row}", flush=True)
    result = {"questions": len(examples), "setting": "HotpotQA distractor setting (10 paragraphs)",
              "budgets": list(BUDGETS), "by_model": table, "wall_s": round(time.time() - start, 1),
              "command": "python benchmarks/extractive_heldout.py --models " + " ".join(args.models) + " --out "
                         + args.out}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
