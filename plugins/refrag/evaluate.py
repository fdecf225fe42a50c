"""Measure a REFRAG artifact: held-out next-paragraph log-perplexity and answer NLL under each expansion policy.

``ragzip evaluate refrag --artifact DIR --out RESULT.json`` (or ``python -m ragzip.plugins.refrag.evaluate``) compares,
on data the training never read (held-out SQuAD dev articles and the last 100 HotpotQA train records, see
:mod:`ragzip.plugins.refrag.train`), every variant read by the decoder the compressor reads with (through the
artifact's LoRA when it has one):

- next-paragraph prediction: the decoder reads paragraph i (full text, nothing, or REFRAG at p = 0 and p = 0.25 with
  each policy) and we score the first 64 tokens of paragraph i+1 (mean token NLL = log-perplexity);
- question answering: the generator's prompt over the question's passages, scoring the gold answer's tokens.

All variants of one example run in one batched decoder pass, so they see identical numerics.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ragzip.models import load_causal_lm
from ragzip.plugins.refrag.compressor import chunk_nll_scores
from ragzip.plugins.refrag.modeling import RefragModel, budget, policy_scalars
from ragzip.plugins.refrag.train import Recipe, RefragArguments, load_corpus

logger = logging.getLogger("ragzip.refrag.evaluate")


def _select(policy: str, m: int, logits: torch.Tensor | None, ppl: list[float], rng: random.Random) -> set[int]:
    n = len(ppl)
    if policy == "learned":
        assert logits is not None
        return set(torch.argsort(logits, descending=True)[:m].tolist())
    if policy == "perplexity":
        return set(sorted(range(n), key=lambda j: (-ppl[j], j))[:m])
    return set(rng.sample(range(n), m))


def _nll_sums(trainer: Recipe, seqs: list[list[Any]]) -> list[tuple[float, int]]:
    """(sum of target-token NLL, number of target tokens) for each sequence, one batched pass."""
    with torch.no_grad():
        out = trainer.nll(seqs)
    counts = torch.bincount(out.rows, minlength=len(seqs)).tolist()  # (B,): scored tokens of each sequence
    return [(float(m) * c, int(c)) for m, c in zip(out.per_sequence.tolist(), counts, strict=True)]


def evaluate_continuation(trainer: Recipe, n: int, p: float, max_chunks: int, target_tokens: int, seed: int
                          ) -> dict[str, Any]:
    corpus = trainer.corpus
    step = max(1, len(corpus.eval_pairs) // n)
    picks = list(range(0, len(corpus.eval_pairs), step))[:n]
    rng = random.Random(seed)
    totals: dict[str, list[float]] = {}
    per_example: dict[str, list[float]] = {}
    for idx in picks:
        context, continuation, sep = corpus.eval_pairs[idx]
        title = corpus.eval_pair_titles[idx]
        chunks = trainer.chunks(context)[-max_chunks:]
        with torch.no_grad():
            c = trainer.model.encode([ch.text for ch in chunks])
            q = trainer.model.encode([title])[0]
            e = trainer.model.project(c)
            scalars = policy_scalars([(j, len(chunks), 0, len(ch)) for j, ch in enumerate(chunks)], trainer.k)
            logits = trainer.model.policy_logits(c, q, scalars)
        ppl = chunk_nll_scores(trainer.decoder, [chunks])[0]
        m = budget(p, len(chunks))
        variants: dict[str, set[int] | None] = {
            "full": set(range(len(chunks))), "refrag_p0": set(),
            f"learned_p{p}": _select("learned", m, logits, ppl, rng),
            f"random_p{p}": _select("random", m, None, ppl, rng),
            f"perplexity_p{p}": _select("perplexity", m, None, ppl, rng),
        }
        seqs = [trainer.cpt_sequence(context, continuation, sep, max_chunks, e, sel, target_tokens)
                for sel in variants.values() if sel is not None]
        target = list(trainer.tok(continuation, add_special_tokens=False)["input_ids"])[:target_tokens]
        sep_ids = list(trainer.tok(sep, add_special_tokens=False)["input_ids"]) or [trainer.pad_id]
        seqs.append([("tokens", sep_ids), ("target", target)])
        names = [*variants, "no_context"]
        for name, (total, count) in zip(names, _nll_sums(trainer, seqs)):
            totals.setdefault(name, [0.0, 0])
            totals[name][0] += total
            totals[name][1] += count
            per_example.setdefault(name, []).append(total / max(count, 1))
    return _summary(totals, per_example, p, extra={"examples": len(picks), "target_tokens": target_tokens,
                                                  "max_context_chunks": max_chunks})


def evaluate_qa(trainer: Recipe, n: int, p: float, seed: int, *, offset: int = 0,
                records: Path | None = None) -> dict[str, Any]:
    """Answer NLL per variant over held-out questions ``offset .. offset + n``; each question's sums are appended to
    ``records`` (JSONL) when given, so a long evaluation can run in pieces and be summarised with ``--summarize``."""
    items = [it for it in trainer.corpus.eval_qa if it.passages and it.answer.strip()]
    rng = random.Random(seed)
    totals: dict[str, list[float]] = {}
    per_example: dict[str, list[float]] = {}
    for index, item in enumerate(items):
        if index >= offset + n:
            break
        if index < offset:
            rng.random()  # keep the random policy's draws identical however the run is split
            continue
        inputs = trainer.qa_inputs(item)
        with torch.no_grad():
            logits = trainer.model.policy_logits(inputs["c"], inputs["q"], inputs["scalars"])
        ppl = [s for row in chunk_nll_scores(trainer.decoder, inputs["chunked"]) for s in row]
        n_chunks = len(ppl)
        m = budget(p, n_chunks)
        variants: dict[str, set[int] | None] = {
            "full": None, "refrag_p0": set(),
            f"learned_p{p}": _select("learned", m, logits, ppl, rng),
            f"random_p{p}": _select("random", m, None, ppl, rng),
            f"perplexity_p{p}": _select("perplexity", m, None, ppl, rng),
        }
        seqs = [trainer.qa_sequence(item, inputs, sel) for sel in variants.values()]
        empty = {"chunked": [], "e": inputs["e"][:0]}
        seqs.append(trainer.qa_sequence(item, empty, set()))  # the prompt with an empty context
        names = [*variants, "no_context"]
        sums = dict(zip(names, _nll_sums(trainer, seqs)))
        if records is not None:
            with open(records, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"index": index, "chunks": n_chunks, "expanded": m, "sums": sums}) + "\n")
        for name, (total, count) in sums.items():
            totals.setdefault(name, [0.0, 0])
            totals[name][0] += total
            totals[name][1] += count
            per_example.setdefault(name, []).append(total / max(count, 1))
        logger.info("qa %d: %s", index, {k: round(t / max(c, 1), 3) for k, (t, c) in sums.items()})
    return _summary(totals, per_example, p, extra={"examples": len(per_example.get("full", []))})


def summarize_records(path: Path, p: float) -> dict[str, Any]:
    """Aggregate the per-question JSONL written by :func:`evaluate_qa` (first record per index wins)."""
    seen: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            seen.setdefault(int(row["index"]), row)
    totals: dict[str, list[float]] = {}
    per_example: dict[str, list[float]] = {}
    for _, row in sorted(seen.items()):
        for name, (total, count) in row["sums"].items():
            totals.setdefault(name, [0.0, 0])
            totals[name][0] += total
            totals[name][1] += count
            per_example.setdefault(name, []).append(total / max(count, 1))
    return _summary(totals, per_example, p, extra={"examples": len(seen), "indices": sorted(seen)})


def _summary(totals: dict[str, list[float]], per_example: dict[str, list[float]], p: float, *,
             extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"p": p, **extra, "variants": {}}
    for name, (total, count) in totals.items():
        mean = total / max(count, 1)
        out["variants"][name] = {"log_ppl": round(mean, 4), "ppl": round(math.exp(mean), 3), "tokens": int(count)}
    learned = per_example.get(f"learned_p{p}", [])
    for other in (f"random_p{p}", f"perplexity_p{p}"):
        if learned and other in per_example:
            wins = sum(a < b for a, b in zip(learned, per_example[other]))
            ties = sum(a == b for a, b in zip(learned, per_example[other]))
            out[f"learned_beats_{other.split('_')[0]}"] = {"wins": wins, "ties": ties, "of": len(learned)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ragzip evaluate refrag", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", default="default")
    parser.add_argument("--data", default=str(Path("..") / "shared" / "data"))
    parser.add_argument("--out", default="")
    parser.add_argument("--p", type=float, default=0.25)
    parser.add_argument("--continuation-examples", type=int, default=48)
    parser.add_argument("--qa-examples", type=int, default=48)
    parser.add_argument("--max-chunks", type=int, default=32)
    parser.add_argument("--target-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="continuation,qa", help="which evaluations to run")
    parser.add_argument("--qa-offset", type=int, default=0, help="first held-out question to evaluate")
    parser.add_argument("--qa-records", default="", help="append per-question sums to this JSONL")
    parser.add_argument("--summarize", default="", help="only aggregate a --qa-records file and print it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.summarize:
        print(json.dumps(summarize_records(Path(args.summarize), args.p), indent=2))
        return 0
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = RefragModel.from_pretrained(args.artifact)
    decoder, tokenizer = load_causal_lm(model.config.decoder)
    decoder = model.reader(decoder, where=f"artifact {args.artifact!r}")  # through its LoRA when it has one
    train_args = RefragArguments(k=model.config.k, decoder=model.config.decoder, seed=args.seed)
    trainer = Recipe(train_args, load_corpus(args.data, dev_eval=True), model, decoder, tokenizer)
    result: dict[str, Any] = {"artifact": args.artifact, "k": model.config.k, "decoder": model.config.decoder,
                              "decoder_lora_rank": model.config.decoder_lora_rank}
    parts = {part.strip() for part in args.parts.split(",")}
    if "continuation" in parts:
        result["continuation"] = evaluate_continuation(trainer, args.continuation_examples, args.p, args.max_chunks,
                                                       args.target_tokens, args.seed)
        logger.info("continuation: %s", json.dumps(result["continuation"]))
    if "qa" in parts:
        result["qa"] = evaluate_qa(trainer, args.qa_examples, args.p, args.seed, offset=args.qa_offset,
                                   records=Path(args.qa_records) if args.qa_records else None)
        logger.info("qa: %s", json.dumps(result["qa"]))
    result["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
