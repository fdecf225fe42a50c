"""The ``ragzip`` command: demo, index, ask, bench, train, evaluate (and the commands plugins add).

Run ``ragzip <command> --help`` for each command's options. The CLI names no compressor: what it trains, evaluates,
demonstrates, caches at index time and adds as a command, it reads from the registry (what each compressor declared
when it registered, :class:`ragzip.compressor.CompressorInfo`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from ragzip import bench
from ragzip.bench.methods import method_label, parse_method
from ragzip.compressor import (
    build_compressor,
    compressor_infos,
    demo_configs,
    evaluators,
    get_compressor_class,
    registered_compressors,
    trainers,
)
from ragzip.corpus import load_corpus
from ragzip.data import demo_file, read_jsonl
from ragzip.embed import Embedder
from ragzip.errors import RagzipError
from ragzip.generation import GeneratorConfig, HFGenerator
from ragzip.metrics import has_answer
from ragzip.pipeline import RAGPipeline
from ragzip.quiet import quiet_dependencies
from ragzip.retrieval import FaissRetriever

logger = logging.getLogger("ragzip")


def _demo_methods() -> list[tuple[str, dict[str, Any]]]:
    """``(label, config)`` of every compressor that declares a demo config, in the order they registered."""
    return [(method_label(c["type"], {k: v for k, v in c.items() if k != "type"}), c) for c in demo_configs()]


def _demo_config(label: str) -> dict[str, Any]:
    """The config of one ``--methods`` entry, read as ``ragzip bench`` reads it (``truncate:96``, ``extractive:t0.3``).

    Raises:
        ConfigError: a bad variant (an unknown name is left to build_compressor, which lists the types).
    """
    name = label.partition(":")[0]
    if name not in registered_compressors():
        return {"type": name}  # build_compressor says so, naming the types there are
    return parse_method(label).config


def cmd_demo(args: argparse.Namespace) -> int:
    """Index the shipped demo corpus, answer its questions through every compressor, print one table per method."""
    with quiet_dependencies():
        return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    embedder = Embedder(args.embedder)
    retriever = FaissRetriever.build(load_corpus(demo_file("demo_corpus.jsonl")), embedder)
    generator = HFGenerator(GeneratorConfig(model=args.generator))
    questions = read_jsonl(demo_file("demo_questions.jsonl"))[: args.questions]
    queries = [q["question"] for q in questions]
    retrieved = retriever.search_batch(queries, args.top_k)
    print(f"indexed {len(retriever)} passages of the demo corpus with {embedder.name}; generator {args.generator}; "
          f"top-{args.top_k}; setup {time.perf_counter() - t0:.1f} s\n")
    summary = []
    asked = [(m.strip(), None) for m in args.methods.split(",")] if args.methods else _demo_methods()
    for label, method in asked:
        try:
            compressor = build_compressor(method or _demo_config(label))
            compressor.bind(generator)
            contexts = compressor.compress_batch(queries, retrieved)
        except (RagzipError, OSError) as err:  # e.g. a plugin whose trained artifact is not in this build
            print(f"## {label}: skipped ({err})\n")
            continue
        answers = [generator.answer(q, c) for q, c in zip(queries, contexts)]
        print(f"## {label}")
        print("| question | answer | ok | context tokens | ratio | compress s | TTFT s |")
        print("|---|---|---|---:|---:|---:|---:|")
        hits = 0
        for q, c, a in zip(questions, contexts, answers):
            ok = has_answer(a.text, q["answers"])
            hits += ok
            print(f"| {q['question']} | {a.text[:60]} | {'yes' if ok else 'no'} | {c.tokens_after} | "
                  f"{c.compression_ratio:.1f}x | {c.compress_s:.3f} | {a.ttft_s:.3f} |")
        n = len(questions)
        summary.append((label, hits / n, sum(c.tokens_after for c in contexts) / n,
                        sum(c.compress_s for c in contexts) / n, sum(a.ttft_s for a in answers) / n))
        print()
    print("## summary")
    print("| method | acc | mean context tokens | mean compress s | mean TTFT s |")
    print("|---|---:|---:|---:|---:|")
    for label, acc, tokens, comp, ttft in summary:
        print(f"| {label} | {acc:.2f} | {tokens:.0f} | {comp:.3f} | {ttft:.3f} |")
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """Build a FAISS index from a corpus (JSONL or a folder of .txt/.md) and save it."""
    t0 = time.perf_counter()
    with quiet_dependencies():  # no "Loading weights" bars; indexing's own progress is ragzip's
        retriever = FaissRetriever.from_corpus(args.corpus, Embedder(args.embedder), chunk_words=args.chunk_words,
                                               chunk_overlap=args.chunk_overlap)
    retriever.save(args.out)
    print(f"indexed {len(retriever)} chunks from {args.corpus} with {args.embedder} into {args.out} "
          f"in {time.perf_counter() - t0:.1f} s")
    generator = None
    for name, cache in _index_caches().items():
        if not getattr(args, f"cache_{name}"):
            continue
        t1 = time.perf_counter()
        generator = generator or HFGenerator(GeneratorConfig(model=args.generator))
        options = {key: getattr(args, f"cache_{name}_{key}") for key in cache.options}
        folder = _load(cache.builder)(retriever, args.out, options, generator=generator)
        shown = f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""
        print(f"built the {name} index cache{shown} in {folder} in {time.perf_counter() - t1:.1f} s")
    return 0


def _index_caches() -> dict[str, Any]:
    """``{type: IndexCache}`` of the compressors that build something beside an index."""
    return {name: info.index_cache for name, info in compressor_infos().items() if info.index_cache is not None}


def _load(path: str) -> Any:
    """The object a ``"module:attribute"`` declaration names, imported on use."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer one question with the pipeline a YAML file describes."""
    with quiet_dependencies():
        answer = RAGPipeline.from_yaml(args.config).ask(args.question)
    if args.json:
        print(json.dumps(answer.as_dict(), indent=2))
        return 0
    ctx = answer.context
    print(answer.text)
    if answer.no_evidence:
        print("\n(no evidence in the retrieved passages: the configured no_evidence_reply, the model was not asked)")
    print(f"\n[{ctx.method}] read {ctx.tokens_after} of {ctx.tokens_before} context tokens "
          f"({ctx.compression_ratio:.1f}x); compress {ctx.compress_s:.3f} s, TTFT {answer.ttft_s:.3f} s, "
          f"total {answer.total_s:.3f} s")
    print(ctx.explain(all_units=args.all_units).replace("all_units=True", "--all-units"))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``ragzip bench``: measure compressors on a QA file (see :mod:`ragzip.bench`); returns the exit status."""
    return bench.run(args)


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    """Dispatch ``ragzip train <type> ...`` to the trainer the compressor declared."""
    trainable = trainers()
    if args.type not in trainable:
        print(f"ragzip train: no trainer for {args.type!r} yet. Trainable types here: {', '.join(trainable) or 'none'}.",
              file=sys.stderr)
        return 2
    return int(importlib.import_module(trainable[args.type]).main(rest) or 0)


def cmd_evaluate(args: argparse.Namespace, rest: list[str]) -> int:
    """Dispatch ``ragzip evaluate <type> ...`` to the evaluation module the compressor declared."""
    declared = evaluators()
    if args.type not in declared:
        print(f"ragzip evaluate: no evaluation for {args.type!r} yet. Types with one here: "
              f"{', '.join(declared) or 'none'}.", file=sys.stderr)
        return 2
    return int(importlib.import_module(declared[args.type]).main(rest) or 0)


_DISPATCH = {"train": cmd_train, "evaluate": cmd_evaluate}  # `ragzip <command> <type> ...`: the rest is the plugin's


def build_parser() -> argparse.ArgumentParser:
    """The ``ragzip`` argument parser: one subcommand each for demo, index, ask, bench, train and evaluate.

    Compressors add their own subcommands and ``index`` cache options through their registration.
    """
    parser = argparse.ArgumentParser(prog="ragzip", description="Compress retrieved context for RAG.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress at INFO level; -vv: DEBUG, with the dependencies' warnings and progress "
                             "bars (quiet by default)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="index the demo corpus and answer questions through every compressor")
    demo.add_argument("--embedder", default="embedded:minilm")
    demo.add_argument("--generator", default="embedded:smollm2-135m")
    demo.add_argument("--top-k", type=int, default=5)
    demo.add_argument("--questions", type=int, default=8, help="how many demo questions to ask")
    demo.add_argument("--methods", default="", help="comma-separated, e.g. none,extractive,truncate:96")
    demo.set_defaults(func=cmd_demo)

    index = sub.add_parser("index", help="build and save a FAISS index from a corpus")
    index.add_argument("--corpus", required=True, help="JSONL file ({id,text,...} per line) or folder of .txt/.md")
    index.add_argument("--out", required=True, help="folder to write the index into")
    index.add_argument("--embedder", default="embedded:minilm")
    index.add_argument("--chunk-words", type=int, default=120)
    index.add_argument("--chunk-overlap", type=int, default=20)
    for name, cache in _index_caches().items():
        _add_index_cache_arguments(index, name, cache)
    index.add_argument("--generator", default="embedded:smollm2-135m", help="generator whose tokenizer cuts chunks")
    index.set_defaults(func=cmd_index)

    ask = sub.add_parser("ask", help="answer a question with a YAML-configured pipeline")
    ask.add_argument("question")
    ask.add_argument("--config", required=True, help="ragzip YAML (see examples/ragzip.yaml)")
    ask.add_argument("--json", action="store_true",
                     help="print the answer and every passage's provenance (decision, units with text, scores and "
                          "character spans, chain stages) as JSON")
    ask.add_argument("--all-units", action="store_true",
                     help="list every scored sentence/chunk with its score, not only the ones the generator reads")
    ask.set_defaults(func=cmd_ask)

    bench_parser = sub.add_parser("bench", help="benchmark compressors and peers on a QA JSONL file")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=cmd_bench)

    for info in compressor_infos().values():
        for command, declared in info.commands.items():
            module = importlib.import_module(declared.module)
            command_parser = sub.add_parser(command, help=declared.help)
            module.add_arguments(command_parser)
            command_parser.set_defaults(func=module.run)

    train = sub.add_parser("train", help="train a compressor: ragzip train <type> --help")
    train.add_argument("type", help=f"one of: {', '.join(trainers())}")
    train.set_defaults(func=None)

    evaluate = sub.add_parser("evaluate", help="measure a trained compressor: ragzip evaluate <type> --help")
    evaluate.add_argument("type", help=f"one of: {', '.join(evaluators())}")
    evaluate.set_defaults(func=None)
    return parser


def _add_index_cache_arguments(parser: argparse.ArgumentParser, name: str, cache: Any) -> None:
    """``--<type>`` and its ``--<type>-<field>`` options, typed and explained by the compressor's config."""
    flag = name.replace("_", "-")
    parser.add_argument(f"--{flag}", dest=f"cache_{name}", action="store_true", help=cache.help)
    fields = {f.name: f for f in dataclasses.fields(get_compressor_class(name).config_class)}
    for key in cache.options:
        default = fields[key].default
        parser.add_argument(f"--{flag}-{key.replace('_', '-')}", dest=f"cache_{name}_{key}", type=type(default),
                            metavar=f"{name}_{key}".upper(),
                            default=default, help=f"{fields[key].metadata.get('help', '')} (with --{flag})".replace("%", "%%"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ragzip`` command line.

    ``ragzip train <type> ...`` and ``ragzip evaluate <type> ...`` hand everything after the type to the plugin's own
    ``main``.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The exit status: 0 on success, 2 when a :class:`~ragzip.RagzipError` was reported on stderr.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] in _DISPATCH and not argv[1].startswith("-"):
        # `ragzip train|evaluate <type> ...`: everything after the type (including --help) belongs to the plugin.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            return _DISPATCH[argv[0]](argparse.Namespace(type=argv[1]), argv[2:])
        except RagzipError as err:
            print(f"ragzip {argv[0]}: error: {err}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose >= 2 else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command in _DISPATCH:
            return _DISPATCH[args.command](args, [])
        return int(args.func(args) or 0)
    except RagzipError as err:
        print(f"ragzip {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
