"""What ``ragzip bench`` writes: the JSON summary, the per-question JSONL, the Markdown table and the plot.

:func:`rerender` redraws a finished run's report from its files; :func:`curves_against` reads its curves against
another reference.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragzip._lazy import require
from ragzip.evidence import add_intervals, curves, excludes_zero

logger = logging.getLogger(__name__)


def output_paths(out: str | Path) -> dict[str, Path]:
    """The four files of a run: ``RESULT.json`` and, beside it, ``RESULT.jsonl``, ``RESULT.md``, ``RESULT.png``."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".json" else out
    return {"json": stem.with_suffix(".json"), "jsonl": stem.with_suffix(".jsonl"), "md": stem.with_suffix(".md"),
            "png": stem.with_suffix(".png")}


def write_outputs(result: Mapping[str, Any], records: Sequence[Mapping[str, Any]], out: str | Path) -> dict[str, Path]:
    """Write the JSON summary, the per-question JSONL, the Markdown table and the plot; return their paths."""
    paths = output_paths(out)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with paths["jsonl"].open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(jsonable(record), ensure_ascii=False) + "\n")
    paths["md"].write_text(markdown_table(result, image=paths["png"].name), encoding="utf-8")
    try:
        plot(result, paths["png"])
    except ImportError as err:  # matplotlib is optional: the MissingDependencyError says how to install it
        logger.warning("no plot written: %s", err)
        paths.pop("png")
    return paths


def read_run(out: str | Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """A finished run's summary and its per-question records by method.

    Reads ``RESULT.json`` and ``RESULT.jsonl``, or the ``RESULT.jsonl.gz`` a committed run keeps.
    """
    paths = output_paths(out)
    result = json.loads(paths["json"].read_text(encoding="utf-8"))
    packed = paths["jsonl"].with_suffix(".jsonl.gz")
    if not paths["jsonl"].is_file() and packed.is_file():
        handle = gzip.open(packed, "rt", encoding="utf-8")
    else:
        handle = paths["jsonl"].open(encoding="utf-8")
    records: dict[str, list[dict[str, Any]]] = {}
    with handle:
        for line in handle:
            if line.strip():
                rec = json.loads(line)
                records.setdefault(rec["method"], []).append(rec)
    return result, records


def rerender(out: str | Path, *, resamples: int = 1000) -> dict[str, Any]:
    """Recompute the intervals and curves of a finished run from its JSON and JSONL, and rewrite its files.

    The budgets, reference and seed are the run's: this is for a change in how the report reads the same
    per-question records.
    """
    result, records = read_run(out)
    methods = result["methods"]
    add_intervals(methods, records, reference=result.get("reference"), resamples=resamples, seed=result["seed"])
    budgets = _budgets(result)
    result["curves"] = curves(methods, records, budgets, reference=result.get("reference"),
                              resamples=resamples, seed=result["seed"])
    paths = write_outputs(result, [r for label in methods for r in records.get(label, [])], out)
    packed = paths["jsonl"].with_suffix(".jsonl.gz")
    if packed.is_file():  # a committed run keeps its records gzipped: keep them so, not a second, plain copy
        with paths["jsonl"].open("rb") as plain, gzip.open(packed, "wb") as handle:
            handle.write(plain.read())
        paths["jsonl"].unlink()
    return result


def curves_against(out: str | Path, reference: str, *, resamples: int = 1000) -> dict[str, Any]:
    """A finished run's curves read at its budgets against another ``reference`` curve (a method family).

    Read from the run's files, which stay as they are: e.g. a new classifier against the one before it on the same
    questions.

    Raises:
        ValueError: ``reference`` is not a curve of the run.
    """
    result, records = read_run(out)
    if reference not in {str(m.get("family") or label) for label, m in result["methods"].items()}:
        raise ValueError(f"{reference!r} is not a curve of this run; its curves: "
                         f"{', '.join(sorted((result.get('curves') or {}).get('families') or {}))}")
    return curves(result["methods"], records, _budgets(result), reference=reference, resamples=resamples,
                  seed=result["seed"])


def _budgets(result: Mapping[str, Any]) -> list[int]:
    return (result.get("curves") or {}).get("budgets") or [64, 128, 256]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(interval: Any) -> str:
    """``[-0.05, 0.02]``, with ``*`` when the interval excludes zero."""
    if not interval:
        return "–"
    return f"[{interval[0]:+.3f}, {interval[1]:+.3f}]" + ("*" if excludes_zero(interval) else "")


def markdown_table(result: Mapping[str, Any], image: str | None = None) -> str:
    """The run as Markdown.

    What was run, the evidence table, the end-to-end table (when the reader ran), each curve's value at the budgets,
    skipped methods and the command.
    """
    r = result.get("retrieval") or {}
    gcfg = result.get("generator_config") or {}
    if r.get("mode") == "faiss":
        retrieval = (f"FAISS top-{r.get('top_k')} over {r.get('corpus_passages')} passages ({r.get('embedder')}), "
                     f"recall@{r.get('top_k')} = {_fmt(r.get('recall_at_k'))}")
    else:
        extra = f", own passage(s) + {r['distractors']} same-article passages, shuffled" if r.get("distractors") else ""
        retrieval = f"given passages ({_fmt(r.get('passages_per_question'), 1)} per question{extra})"
    generate = result.get("generate", True)
    lines = [
        f"# ragzip bench: {Path(str(result.get('data'))).name}",
        "",
        f"- **{result.get('n')} questions** (seed {result.get('seed')}), {retrieval}",
    ]
    if generate:
        lines.append(f"- generator `{result.get('generator')}`, greedy, max {gcfg.get('max_new_tokens', '?')} new "
                     f"tokens, stop {gcfg.get('stop', '?')!r}")
    else:
        lines.append(f"- no reader (`--no-generate`): what survives compression; tokens counted with "
                     f"`{result.get('generator')}`'s tokenizer")
    budget = result.get("budget")
    if budget and budget.get("tokens") is not None:
        lines.append(f"- equal budget for plain truncate / longllmlingua: {budget['tokens']} tokens "
                     f"(mean read by `{budget['reference']}`)")
    methods = result.get("methods") or {}
    ref = result.get("reference")
    lines += [
        "",
        "## Evidence kept",
        "",
        "| method | tokens read | ans_in_ctx | sf_recall | sf_all | compress s | Δ ans_in_ctx vs none | "
        f"Δ sf_all vs none |{f' Δ ans_in_ctx vs {ref} | Δ sf_all vs {ref} |' if ref else ''}",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if ref else ""),
    ]
    for name, m in methods.items():
        ci, cr = m.get("diff_ci") or {}, m.get("diff_ci_ref") or {}
        row = (f"| {name} | {_fmt(m.get('context_tokens'), 1)} | {_fmt(m.get('ans_in_ctx'))} | "
               f"{_fmt(m.get('sf_recall'))} | {_fmt(m.get('sf_all'))} | {_fmt(m.get('compress_s'))} | "
               f"{_ci(ci.get('ans_in_ctx'))} | {_ci(ci.get('sf_all'))} |")
        if ref:
            row += f" {_ci(cr.get('ans_in_ctx'))} | {_ci(cr.get('sf_all'))} |"
        lines.append(row)
    if generate:
        lines += [
            "",
            "## End to end",
            "",
            "| method | acc | EM | F1 | ans_in_ctx | tokens read | ratio | compress s | TTFT s | total s | peak RSS MB "
            "| Δ acc vs none | Δ F1 vs none |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in methods.items():
            ratio = m.get("compression_ratio")
            ci = m.get("diff_ci") or {}
            lines.append(
                f"| {name} | {_fmt(m.get('acc'))} | {_fmt(m.get('em'))} | {_fmt(m.get('f1'))} | "
                f"{_fmt(m.get('ans_in_ctx'))} | {_fmt(m.get('context_tokens'), 1)} | "
                f"{'∞' if ratio is None else f'{ratio:.2f}x'} | {_fmt(m.get('compress_s'))} | {_fmt(m.get('ttft_s'))} | "
                f"{_fmt(m.get('total_s'))} | {_fmt(m.get('peak_rss_mb'), 0)} | {_ci(ci.get('acc'))} | "
                f"{_ci(ci.get('f1'))} |")
    curves_ = (result.get("curves") or {}).get("families") or {}
    budgets = (result.get("curves") or {}).get("budgets") or []
    metrics = ["ans_in_ctx", "sf_all"] + (["acc"] if generate else [])
    rows = []
    for family, c in curves_.items():
        for metric in metrics:
            cells = []
            for b in budgets:
                cell = (c.get("at") or {}).get(str(b), {}).get(metric)
                if not cell:
                    cells.append("–")
                    continue
                vs = f" {_ci(cell['diff_ci_ref'])}" if cell.get("diff_ci_ref") else ""
                cells.append(f"{cell['value']:.3f}{vs} ({' / '.join(f'`{x}`' for x in cell['between'])})")
            if any(x != "–" for x in cells):
                rows.append(f"| {family} | {metric} | " + " | ".join(cells) + " |")
    if rows:
        lines += [
            "",
            "## At equal budgets (tokens read)",
            "",
            "Each curve read at the budget, interpolated linearly between the two measured settings named in "
            "brackets (or at the highest setting when it reads at most 5% under the budget); `–` where the curve does "
            "not reach the budget (no extrapolation)."
            + (f" Interval: paired 95% bootstrap of the difference to `{(result.get('curves') or {}).get('reference')}`"
               " at the same budget." if (result.get("curves") or {}).get("reference") else ""),
            "",
            "| curve | metric | " + " | ".join(f"{b} tokens" for b in budgets) + " |",
            "|---|---|" + "---|" * len(budgets),
            *rows,
        ]
    skipped = result.get("skipped") or {}
    if skipped:
        lines += ["", "Skipped:"] + [f"- `{k}`: {v}" for k, v in skipped.items()]
    machine = result.get("machine") or {}
    lines += [
        "",
        "Means per question. `ans_in_ctx`: a normalised gold answer occurs in the text the generator reads (yes/no "
        "questions left out; for soft compressors only their expanded text counts); `sf_recall` / `sf_all`: share of "
        "the HotpotQA supporting-fact sentences kept verbatim / all of them kept. Intervals: paired bootstrap 95% "
        f"({result.get('n')} questions resampled), `*` = excludes zero. Tokens are counted with the generator's "
        "tokenizer; ratio = uncompressed / read tokens (sum over questions).",
    ]
    if generate:
        lines.append("`acc`: a gold answer occurs in the normalised output; EM/F1: SQuAD normalisation. TTFT and "
                     "total include compression. Peak RSS is the whole process (shared models included).")
    if any(m.get("scores_from") for m in methods.values()):
        lines.append("Rows that re-select from the scores an earlier row of the same model computed (`scores_from`) "
                     "show the selection time only as compress s; the scoring ran once, in that row.")
    timing = result.get("timing") or {}
    if generate and timing.get("batch_size", 1) > 1:
        lines.append(f"Decoded in batches of {timing['batch_size']}: `total s` is the method's wall time over the "
                     f"questions (compression, batched decoding and the TTFT probes); `TTFT s` is measured on the "
                     f"first {timing.get('ttft_questions')} questions of each method, each run alone to its first "
                     "token.")
    lines += [
        "",
        f"Command: `{result.get('command') or 'run_bench(...)'}`",
        "",
        f"Run {result.get('date')} on {machine.get('cpu_count')} CPU cores "
        f"(torch threads {machine.get('torch_threads')}, load average {machine.get('load_avg_1m_start')} at the "
        f"start, {machine.get('load_avg_1m_end')} at the end), "
        f"wall time {result.get('wall_s')} s.",
    ]
    if image:
        lines += ["", f"![Evidence kept against tokens read]({image})"]
    return "\n".join(lines) + "\n"


def plot(result: Mapping[str, Any], path: str | Path) -> None:
    """The Pareto picture: each metric against tokens read, one line per method family.

    A single setting is a point. With a reader, the picture also shows the time per question (compress / prefill /
    decode).
    """
    matplotlib = require("matplotlib", extra="dev", feature="the bench plot")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", extra="dev", feature="the bench plot")

    methods = result.get("methods") or {}
    families = (result.get("curves") or {}).get("families") or {}
    generate = result.get("generate", True)
    metrics = [m for m in ("ans_in_ctx", "sf_all", "acc")
               if any(p.get(m) is not None for c in families.values() for p in c["points"])]
    panels = len(metrics) + (1 if generate and methods else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(5.2 * max(panels, 1), 4.6), squeeze=False)
    axes = list(axes[0])
    for ax, metric in zip(axes, metrics, strict=False):
        for i, (family, c) in enumerate(families.items()):
            pts = [p for p in c["points"] if p.get(metric) is not None]
            if not pts:
                continue
            xs, ys = [p["tokens"] for p in pts], [p[metric] for p in pts]
            marker = "o" if len(pts) > 1 else "s"
            ax.plot(xs, ys, marker=marker, ms=4, lw=1.4, label=family, color=f"C{i % 10}")
        for b in (result.get("curves") or {}).get("budgets") or []:
            ax.axvline(b, color="grey", lw=0.6, ls=":")
        xs_all = [p["tokens"] for c in families.values() for p in c["points"] if p["tokens"] > 0]
        if xs_all and max(xs_all) > 8 * min(xs_all):
            ax.set_xscale("log")
        ax.set_xlabel("tokens read by the generator (mean per question)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: {Path(str(result.get('data'))).name}, n={result.get('n')}", fontsize=9)
        ax.grid(alpha=0.3)
    if metrics:
        axes[0].legend(fontsize=6, loc="lower right")
    if generate and methods:
        right = axes[len(metrics)]
        names = list(methods)
        batched = (result.get("timing") or {}).get("batch_size", 1) > 1
        compress = [methods[n]["compress_s"] for n in names]
        prefill = [methods[n].get("gen_ttft_s", 0.0) or 0.0 for n in names]
        # One at a time: the generation's own time; batched: the wall time per question less compression and TTFT.
        decode = [max(((methods[n].get("total_s") or 0.0) - methods[n]["compress_s"] if batched else
                       methods[n].get("gen_s", 0.0)) - (methods[n].get("gen_ttft_s") or 0.0), 0.0) for n in names]
        ys = range(len(names))
        right.barh(ys, compress, label="compress")
        right.barh(ys, prefill, left=compress, label="prefill + first token")
        right.barh(ys, decode, left=[c + p for c, p in zip(compress, prefill, strict=True)], label="rest of decoding")
        right.set_yticks(list(ys), names, fontsize=7)
        right.invert_yaxis()
        right.set_xlabel("seconds per question")
        right.set_title("time per question" + (f" (batches of {result['timing']['batch_size']})" if batched else ""),
                        fontsize=9)
        right.legend(fontsize=7)
        right.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def jsonable(value: Any) -> Any:
    """``value`` with keys as strings, tuples as lists, NaN and infinities as ``None``, other objects as text."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
