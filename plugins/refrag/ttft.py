"""``ragzip ttft``: time-to-first-token of full-context prefill against REFRAG, with and without the chunk cache.

For each context length the benchmark assembles retrieved-style passages (SQuAD paragraphs, or the demo corpus when
``../shared/data`` is absent) totalling exactly that many generator tokens, asks one question over them and times
the path a user takes, from passages to the first generated token:

- ``none``: format the prompt with the full text, tokenize, prefill, pick the first token;
- ``refrag`` (per k, ``cached`` false): chunk, encode every chunk, run the policy, project, store the soft tokens,
  then the same generator call, which splices them in;
- ``refrag`` (per k, ``cached`` true): the same, with the chunk vectors read from a cache built beforehand (as
  ``ragzip index --refrag`` would), so the query pays only for the projector, policy and decoder.

With an artifact that has a decoder LoRA, the REFRAG prompts are read by the generator's LoRA-merged copy
(``HFGenerator.add_reader``): the plain decoder's architecture and cost, so the comparison stays like for like; the
JSON records ``decoder_lora_rank``.

Each setting runs once to warm up, then ``--repeats`` times; the JSON holds medians:
``{"runs": [{"method", "context_tokens", "k", "cached", "ttft_s", "decoder_positions", ...}], ...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ragzip.data import demo_file, read_jsonl
from ragzip.errors import ConfigError
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.plugins.refrag.cache import build_refrag_cache
from ragzip.plugins.refrag.compressor import RefragCompressor
from ragzip.plugins.refrag.config import RefragConfig

logger = logging.getLogger(__name__)

DEFAULT_QUESTION = "What is the main subject of these passages?"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 1024,2048") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} must list positive integers, e.g. 1024,2048")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ragzip ttft``."""
    parser.add_argument("--methods", default="none,refrag", help="comma-separated: none, refrag")
    parser.add_argument("--context-tokens", type=_int_list, default=[1024, 2048, 4096],
                        help="context lengths in generator tokens, comma-separated")
    parser.add_argument("--k", type=_int_list, default=[8, 16], help="REFRAG chunk sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (the median is reported)")
    parser.add_argument("--out", default="", help="write the JSON result here")
    parser.add_argument("--data", default=str(Path("..") / "shared" / "data" / "squad_dev.jsonl"),
                        help="JSONL with a `context` field per line (SQuAD style); the demo corpus when absent")
    parser.add_argument("--generator", default="embedded:smollm2-135m")
    parser.add_argument("--artifact", default="default", help="REFRAG artifact ('default' or a folder)")
    parser.add_argument("--p", type=float, default=0.0, help="REFRAG expansion budget during the timing")
    parser.add_argument("--policy", default="none", help="REFRAG policy during the timing (none, learned, ...)")
    parser.add_argument("--cached", default="both", choices=("both", "yes", "no"),
                        help="time REFRAG with the chunk cache, without it, or both")
    parser.add_argument("--passage-tokens", type=int, default=160, help="tokens per passage of the context")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("RAGZIP_THREADS", "1")),
                        help="torch CPU threads (1 on a shared machine; more threads on busy cores spin-wait)")
    parser.add_argument("--question", default=DEFAULT_QUESTION)


def _source_texts(path: str) -> list[str]:
    file = Path(path)
    texts: list[str] = []
    if file.is_file():
        with open(file, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                context = row.get("context")
                if isinstance(context, str) and context.strip() and (not texts or texts[-1] != context):
                    texts.append(context)
    if not texts:
        logger.warning("%s not found: timing on the demo corpus (repeated as needed)", path)
        texts = [r["text"] for r in read_jsonl(demo_file("demo_corpus.jsonl"))]
    return texts


def make_context(texts: Sequence[str], tokenizer: Any, n_tokens: int, passage_tokens: int) -> list[str]:
    """Passages of about ``passage_tokens`` generator tokens each, exactly ``n_tokens`` tokens in all."""
    passages: list[str] = []
    total = 0
    i = 0
    while total < n_tokens:
        text = texts[i % len(texts)]
        i += 1
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        for start in range(0, len(offsets), passage_tokens):
            take = min(passage_tokens, len(offsets) - start, n_tokens - total)
            if take <= 0:
                break
            piece = text[offsets[start][0]:offsets[start + take - 1][1]].strip()
            count = len(tokenizer(piece, add_special_tokens=False)["input_ids"])
            if piece and total + count <= n_tokens:
                passages.append(piece)
                total += count
            if total >= n_tokens:
                break
        if i > 100 * len(texts):
            break
    return passages


def _median_run(fn: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    fn()  # warm-up
    runs = [fn() for _ in range(repeats)]
    keys = runs[0].keys()
    return {key: statistics.median([r[key] for r in runs]) if isinstance(runs[0][key], (int, float)) else runs[0][key]
            for key in keys}


def measure(generator: Any, passages: Sequence[str], question: str, method: str, *,
            compressor: Any = None) -> dict[str, Any]:
    """One timed pass from passages to the first token.

    Returns ``ttft_s`` (wall), ``ttft_cpu_s`` (CPU time of this process: with one torch thread, the latency an idle
    machine would show, robust to other jobs on shared cores), ``compress_s``, ``prefill_s`` (the generator's own
    prefill + first token) and ``decoder_positions``.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    if method == "none":
        context = "\n\n".join(passages)
        compress_s = 0.0
    else:
        ctx = compressor.compress(question, list(passages))
        context = ctx.text
        compress_s = time.perf_counter() - start
    gen = generator.generate([generator.format_prompt(question, context)], max_new_tokens=1, stop=())[0]
    return {"ttft_s": time.perf_counter() - start, "ttft_cpu_s": time.process_time() - cpu_start,
            "compress_s": compress_s, "prefill_s": gen.ttft_s, "decoder_positions": gen.prompt_positions}


def benchmark(generator: Any, make_compressor: Callable[[int, str], Any], texts: Sequence[str], *,
              methods: Sequence[str], context_tokens: Sequence[int], ks: Sequence[int], repeats: int,
              cached_modes: Sequence[bool], passage_tokens: int, question: str) -> list[dict[str, Any]]:
    """All runs of the benchmark (medians); ``make_compressor(k, cache_path)`` builds a bound REFRAG compressor."""
    runs: list[dict[str, Any]] = []
    for n_tokens in context_tokens:
        passages = make_context(texts, generator.tokenizer, n_tokens, passage_tokens)
        actual = sum(generator.token_counter.count_many(passages))
        if "none" in methods:
            row = _median_run(lambda ps=passages: measure(generator, ps, question, "none"), repeats)
            runs.append({"method": "none", "context_tokens": n_tokens, "k": None, "cached": None, **row,
                         "context_tokens_actual": actual, "passages": len(passages)})
            logger.info("none %d: %s", n_tokens, row)
        if "refrag" not in methods:
            continue
        for k in ks:
            for cached in cached_modes:
                with tempfile.TemporaryDirectory(prefix="ragzip-ttft-") as tmp:
                    compressor = make_compressor(k, "")
                    if cached:
                        build_refrag_cache(passages, tmp, compressor=compressor)
                        compressor = make_compressor(k, tmp)
                    row = _median_run(lambda ps=passages, c=compressor: measure(generator, ps, question, "refrag",
                                                                                compressor=c), repeats)
                runs.append({"method": "refrag", "context_tokens": n_tokens, "k": k, "cached": cached, **row,
                             "context_tokens_actual": actual, "passages": len(passages)})
                logger.info("refrag %d k=%d cached=%s: %s", n_tokens, k, cached, row)
    return runs


def speedups(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """TTFT of full context / TTFT of each REFRAG setting, per context length (wall and CPU time)."""
    full = {r["context_tokens"]: r for r in runs if r["method"] == "none"}
    return [{"context_tokens": r["context_tokens"], "k": r["k"], "cached": r["cached"],
             "speedup": round(full[r["context_tokens"]]["ttft_s"] / r["ttft_s"], 2),
             "speedup_cpu": round(full[r["context_tokens"]]["ttft_cpu_s"] / max(r["ttft_cpu_s"], 1e-9), 2)}
            for r in runs if r["method"] == "refrag" and r["context_tokens"] in full]


def markdown_table(runs: Sequence[dict[str, Any]]) -> str:
    """The runs as a Markdown table with speed-ups over full context (wall and CPU time)."""
    lines = ["| method | context tokens | k | cached | TTFT s | TTFT CPU s | compress s | prefill s | decoder positions "
             "| speed-up (wall) | speed-up (CPU) |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    full = {r["context_tokens"]: r for r in runs if r["method"] == "none"}
    for r in runs:
        base = full.get(r["context_tokens"])
        wall = f"{base['ttft_s'] / r['ttft_s']:.1f}x" if base else ""
        cpu = f"{base['ttft_cpu_s'] / r['ttft_cpu_s']:.1f}x" if base and r["ttft_cpu_s"] > 0 else ""
        cached = "" if r["cached"] is None else ("yes" if r["cached"] else "no")
        lines.append(f"| {r['method']} | {r['context_tokens']} | {r['k'] or ''} | {cached} | {r['ttft_s']:.3f} | "
                     f"{r['ttft_cpu_s']:.3f} | {r['compress_s']:.3f} | {r['prefill_s']:.3f} | "
                     f"{r['decoder_positions']} | {wall} | {cpu} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``ragzip ttft``; prints a table and writes ``--out``. Returns the exit status."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - {"none", "refrag"})
    if unknown or not methods:
        raise ConfigError(f"--methods {args.methods!r}: unknown method(s) {unknown}; choose from none, refrag.")
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats!r} must be >= 1.")
    torch.set_num_threads(max(1, args.threads))
    generator = HFGenerator(GeneratorConfig(model=args.generator, max_new_tokens=1))
    shared: dict[str, Any] = {}

    def make_compressor(k: int, cache: str) -> RefragCompressor:
        config = RefragConfig(k=k, p=args.p, policy=args.policy, artifact=args.artifact, cache=cache)
        compressor = RefragCompressor(config, model=shared.get("model"))
        compressor.bind(generator)
        shared["model"] = compressor.model
        return compressor

    load = os.getloadavg()[0]
    start = time.perf_counter()
    cached_modes = {"both": [False, True], "yes": [True], "no": [False]}[args.cached]
    runs = benchmark(generator, make_compressor, _source_texts(args.data), methods=methods,
                     context_tokens=args.context_tokens, ks=args.k, repeats=args.repeats, cached_modes=cached_modes,
                     passage_tokens=args.passage_tokens, question=args.question)
    lora = shared["model"].config.decoder_lora_rank if "model" in shared else None
    result = {"runs": runs, "speedup": speedups(runs), "generator": args.generator, "artifact": args.artifact,
              "decoder_lora_rank": lora,  # >0: REFRAG prompts ran on the LoRA-merged copy (same cost as the plain)
              "p": args.p, "policy": args.policy, "repeats": args.repeats, "threads": args.threads,
              "statistic": "median", "device": str(generator.device), "loadavg_1min": [load, os.getloadavg()[0]],
              "wall_s": round(time.perf_counter() - start, 1)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(runs))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ragzip.plugins.refrag.ttft`` (the same command as ``ragzip ttft``)."""
    parser = argparse.ArgumentParser(prog="ragzip ttft", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
