"""Calibrate the extractive compressor's ``retrieval_prior`` on held-out *training* questions (never dev).

The questions are the 100 QED (Natural Questions train) questions that the shipped classifier held out of training
(``split_holdout`` over the three training files, 100 per source, seed 0, as ``ragzip train extractive`` splits
them). Each is answered from FAISS top-5 over all 6,854 distinct QED training passages with the embedded MiniLM, as the
NQ evidence bench does over the dev file's passages. Every sentence is scored once; each setting of the prior then
selects under budgets of 64, 128, 25% of these questions' mean retrieved tokens, and 256 tokens, and the share of
questions whose answer string survives (``ans_in_ctx``) is reported. The chosen weight is the smallest whose mean
over the four budgets is within one question (0.01) of the best: on 100 questions closer means are noise, and a
smaller weight leans less on the retrieval order (multi-hop questions need passages the retriever ranks lower).

    python benchmarks/retrieval_prior.py --data ../shared/data --out benchmarks/results/retrieval_prior_heldout_train.json

About 8 minutes on 2 CPU cores (most of it embedding the passages).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ragzip.data import QED, held_out_ids, make_passage, read_jsonl
from ragzip.embed import Embedder
from ragzip.evidence import answer_in_context
from ragzip.plugins.extractive import ExtractiveCompressor, ExtractiveConfig
from ragzip.retrieval import FaissRetriever

TRAIN_FILES = ("hotpotqa_train.jsonl", "qed_nq_train.jsonl.gz", "squad_train_partial.jsonl.gz")
FIXED_BUDGETS = (64, 128, 256)
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="folder with the three training files")
    parser.add_argument("--out", default="benchmarks/results/retrieval_prior_heldout_train.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    start = time.time()

    held_ids = held_out_ids([data / name for name in TRAIN_FILES], 100, 0, QED)
    rows = read_jsonl(data / "qed_nq_train.jsonl.gz")
    passages = list({p.id: p for p in (make_passage(r.get("title"), r["context"], "qed") for r in rows)}.values())
    questions = [r for r in rows if str(r["id"]) in held_ids]
    retriever = FaissRetriever.build(passages, Embedder("embedded:minilm"), top_k=5)
    retrieved = retriever.search_batch([r["question"] for r in questions], 5)

    compressor = ExtractiveCompressor(ExtractiveConfig())
    compressor.memoize_scores()  # every setting below selects from one scoring pass
    retrieved_tokens = [sum(compressor.token_counter.count_many([p.text for p in ps])) for ps in retrieved]
    quarter = round(0.25 * sum(retrieved_tokens) / len(retrieved_tokens))
    budgets = sorted((*FIXED_BUDGETS, quarter))
    queries = [r["question"] for r in questions]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for weight in WEIGHTS:
        row = table.setdefault(str(weight), {})
        for budget in budgets:
            selector = compressor.with_selection(max_tokens=budget, retrieval_prior=weight)
            contexts = selector.compress_batch(queries, retrieved)
            hits = [answer_in_context(c.text, r["answers"]) for c, r in zip(contexts, questions, strict=True)]
            kept = [h for h in hits if h is not None]
            row[str(budget)] = {"ans_in_ctx": round(sum(kept) / len(kept), 4),
                                "tokens_read": round(sum(c.tokens_after for c in contexts) / len(contexts), 1)}
        row["mean_ans_in_ctx"] = round(sum(row[str(b)]["ans_in_ctx"] for b in budgets) / len(budgets), 4)
    top = max(table[str(w)]["mean_ans_in_ctx"] for w in WEIGHTS)
    best = min(w for w in WEIGHTS if table[str(w)]["mean_ans_in_ctx"] >= top - 0.01)
    result = {"questions": len(questions), "corpus_passages": len(passages), "top_k": 5, "budgets": budgets,
              "mean_retrieved_tokens": round(sum(retrieved_tokens) / len(retrieved_tokens), 1),
              "by_weight": table, "chosen": best, "wall_s": round(time.time() - start, 1),
              "command": "python benchmarks/retrieval_prior.py --data " + args.data + " --out " + args.out}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for weight in WEIGHTS:
        row = table[str(weight)]
        print(f"retrieval_prior={weight}: " + ", ".join(f"@{b} {row[str(b)]['ans_in_ctx']:.2f}" for b in budgets)
              + f" (mean {row['mean_ans_in_ctx']:.3f})")
    print(f"chosen: {best}; wrote {args.out}")


if __name__ == "__main__":
    main()
