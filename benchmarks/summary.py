"""Print the README's benchmark summary from the result files, so the published numbers cannot drift from them.

    python benchmarks/summary.py            # evidence at 64/128/256 tokens + the end-to-end table, as Markdown

Reads ``benchmarks/results/evidence_{hotpotqa,hotpotqa_faiss,squad,nq}.json`` and ``benchmarks/results/hotpotqa_dev_209.json`` (the
ones that exist).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SETS = {"hotpotqa": "HotpotQA dev, distractor setting (10 paragraphs)",
        "hotpotqa_faiss": "HotpotQA dev, FAISS top-5",
        "squad": "SQuAD dev, own paragraph + 4 same-article paragraphs",
        "nq": "NQ-open dev with a gold passage, FAISS top-5"}
CURVES = {"extractive:max_tokens=*": "ragzip extractive (max_tokens)",
          "extractive:model=runs/extractive-v2,max_tokens=*": "previous extractive artifact (v2)",
          "extractive:retrieval_prior=0,max_tokens=*": "ragzip extractive without the retrieval prior",
          "lc_embeddings_filter:k=*": "LangChain EmbeddingsFilter (k=1..3)",
          "ragcompress:budget=*": "ragcompress (budget)",
          "truncate:*": "truncate"}


def _cell(at: dict, budget: str, metric: str) -> str:
    cell = at.get(budget, {}).get(metric)
    if not cell:
        return "–"
    ci = cell.get("diff_ci_ref")
    mark = "*" if ci and (ci[0] > 0 or ci[1] < 0) else ""
    return f"{cell['value']:.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]{mark}" if ci else "")


def evidence_table() -> list[str]:
    lines = ["| data (n) | curve | ans_in_ctx @64 | @128 | @256 | sf_all @128 | @256 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, title in SETS.items():
        path = RESULTS / f"evidence_{name}.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        fams = res["curves"]["families"]
        for family, label in CURVES.items():
            if family not in fams:
                continue
            at = fams[family]["at"]
            sf = [_cell(at, b, "sf_all") for b in ("128", "256")] if name.startswith("hotpotqa") else ["", ""]
            lines.append(f"| {title} ({res['n']}) | {label} | " + " | ".join(
                [_cell(at, b, "ans_in_ctx") for b in ("64", "128", "256")] + sf) + " |")
        for label, what in (("extractive", "ragzip extractive, default rule"), ("none", "everything (`none`)")):
            m = res["methods"].get(label)
            if m:
                sf_all = f"{m['sf_all']:.2f}" if m.get("sf_all") is not None else ""
                lines.append(f"| {title} ({res['n']}) | {what}: {m['context_tokens']:.0f} tokens read | "
                             f"ans_in_ctx {m['ans_in_ctx']:.2f} | | | sf_all {sf_all} | |")
    return lines


def end_to_end_table() -> list[str]:
    path = RESULTS / "hotpotqa_dev_209.json"
    if not path.is_file():
        return []
    res = json.loads(path.read_text())
    lines = ["| method | acc | F1 | ans_in_ctx | tokens read | s per question | Δ acc vs none | Δ F1 vs none |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in res["methods"].items():
        ci = m.get("diff_ci") or {}

        def fmt(x: list | None) -> str:
            return "–" if not x else f"[{x[0]:+.3f}, {x[1]:+.3f}]" + ("*" if x[0] > 0 or x[1] < 0 else "")

        lines.append(f"| {name} | {m['acc']:.3f} | {m['f1']:.3f} | {m['ans_in_ctx']:.3f} | "
                     f"{m['context_tokens']:.0f} | {m['total_s']:.2f} | {fmt(ci.get('acc'))} | {fmt(ci.get('f1'))} |")
    return lines


def main() -> int:
    print("\n".join(evidence_table()))
    print()
    print("\n".join(end_to_end_table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
