"""``ragzip bench``'s command line: its options (:func:`add_arguments`) and :func:`run`, which prints the table."""

from __future__ import annotations

import argparse
import re
import shlex
import sys

import torch

from ragzip.bench.methods import default_methods
from ragzip.bench.report import markdown_table, output_paths
from ragzip.bench.runner import load_bench_config, run_bench
from ragzip.errors import ConfigError, InputError
from ragzip.models import cache_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``ragzip bench`` options to ``parser``."""
    parser.add_argument("--data", required=True, help="HotpotQA-style or NQ/SQuAD-style JSONL file.")
    parser.add_argument("--methods", default=default_methods(),
                        help="Comma-separated methods, each optionally name:variant (truncate:256, extractive:t0.3, "
                             "lc_embeddings_filter:k=3). Default: %(default)s.")
    parser.add_argument("--limit", type=int, default=100,
                        help="Questions to run: the first N after a shuffle seeded with --seed (default %(default)s).")
    parser.add_argument("--top-k", type=int, default=None, help="Passages retrieved per question (default 5).")
    parser.add_argument("--out", default="bench.json",
                        help="Result JSON; .jsonl, .md and .png are written beside it (default %(default)s).")
    parser.add_argument("--setting", choices=("faiss", "given"), default="faiss",
                        help="faiss: one index over all passages of the file; given: each question's own passages.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the question shuffle and of torch.")
    parser.add_argument("--generator", default=None, help="Generator model spec (default embedded:smollm2-135m).")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Most tokens per answer (default 32).")
    parser.add_argument("--embedder", default=None, help="Embedder of retrieval and the peers (default embedded:minilm).")
    parser.add_argument("--config", default=None,
                        help="YAML with `methods:` (label -> compressor config), `generator:` and `embedder:`.")
    parser.add_argument("--budget", type=int, default=None,
                        help="Equal budget in tokens for plain truncate and longllmlingua (default: the mean tokens "
                             "read by the first ragzip compressor in --methods).")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="Questions compressed and decoded together; 1 (default) measures each question's "
                             "compression and TTFT exactly.")
    parser.add_argument("--ttft-questions", type=int, default=20,
                        help="With --batch-size > 1: the first N questions of each method are also run alone to the "
                             "first token, and TTFT is their mean (default 20).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--index-cache", default=None,
                        help="Folder to save and reuse the FAISS index of the data file (default: the ragzip cache, "
                             "~/.cache/ragzip/bench-index; keyed by the embedder and the passages' content).")
    parser.add_argument("--no-index-cache", action="store_true", help="Always rebuild the FAISS index.")
    parser.add_argument("--no-warmup", action="store_true", help="Skip the untimed warm-up call of each method.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.add_argument("--no-generate", action="store_true",
                        help="Skip the reader: report only what survives compression (ans_in_ctx, sf_recall, sf_all, "
                             "tokens read) and the compression cost. Fast enough for 1,000+ questions.")
    parser.add_argument("--distractors", type=int, default=0,
                        help="With --setting given: add N other passages of the same article to each question's own, "
                             "shuffled (SQuAD's same-topic distractor setting).")
    parser.add_argument("--require-gold", action="store_true",
                        help="Only questions whose record names a gold passage (NQ-open: those with a context).")
    parser.add_argument("--reference", default=None,
                        help="A method label or sweep family every row is also compared with (paired intervals), "
                             "e.g. `lc_embeddings_filter:k=*`.")
    parser.add_argument("--budgets", default="64,128,256",
                        help="Tokens-read budgets at which every curve is read; N%% = N%% of the tokens `none` "
                             "reads (default %(default)s).")
    parser.add_argument("--resamples", type=int, default=1000, help="Bootstrap resamples (default %(default)s).")


def _budgets(text: str) -> list[int | str]:
    """``64,128,25%`` -> ``[64, 128, "25%"]`` (a percentage is of the tokens ``none`` reads)."""
    values: list[int | str] = []
    for part in (x.strip() for x in str(text).split(",") if x.strip()):
        if re.fullmatch(r"\d+(\.\d+)?%", part) and 0 < float(part[:-1]) <= 100:
            values.append(part)
        elif part.isdigit() and int(part) > 0:
            values.append(int(part))
        else:
            raise ConfigError(f"--budgets {text!r}: {part!r} is neither a positive token count nor a percentage of "
                              "the uncompressed tokens; write e.g. 64,128,256,25%.")
    return values


def run(args: argparse.Namespace) -> int:
    """Run ``ragzip bench`` from parsed arguments; print the Markdown table. Exit code 1 when a method failed."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_bench_config(args.config)
    generator = args.generator or (cfg.get("generator") or {}).get("model") or "embedded:smollm2-135m"
    top_k = args.top_k if args.top_k is not None else int(cfg.get("top_k", 5))
    command = "ragzip bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 and \
        sys.argv[1] == "bench" else " ".join(shlex.quote(a) for a in sys.argv)
    index_cache = None
    if not args.no_index_cache:
        index_cache = args.index_cache or cache_dir() / "bench-index"
    try:
        result = run_bench(
            args.data, args.methods, limit=args.limit, top_k=top_k, setting=args.setting, seed=args.seed,
            generator=generator, max_new_tokens=args.max_new_tokens, embedder=args.embedder or
            cfg.get("embedder", "embedded:minilm"), config=cfg, out=args.out, batch_size=args.batch_size,
            warmup=not args.no_warmup, progress=not args.quiet, command=command, index_cache=index_cache,
            budget=args.budget, ttft_questions=args.ttft_questions, generate=not args.no_generate,
            distractors=args.distractors, require_gold=args.require_gold, reference=args.reference,
            budgets=_budgets(args.budgets), resamples=args.resamples)
    except (ConfigError, InputError) as err:
        print(f"ragzip bench: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(result))
    paths = output_paths(args.out)
    print("wrote " + ", ".join(str(p) for k, p in paths.items() if p.exists()), file=sys.stderr)
    return 1 if result.get("failed") else 0
