"""Re-read a finished bench run against another reference curve (paired bootstrap at each budget), from its files.

The bench computes intervals against one reference (``--reference``) while it runs; this reads the run's
``RESULT.json`` and per-question ``RESULT.jsonl`` (or ``.jsonl.gz``) and prints every curve at the run's budgets against
another family, e.g. a new classifier against the one before it on the same questions:

    python benchmarks/paired_curves.py benchmarks/results/evidence_nq.json --reference "extractive:model=runs/extractive-v3,max_tokens=*"
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from ragzip.evidence import curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", help="a bench RESULT.json with its RESULT.jsonl(.gz) beside it")
    parser.add_argument("--reference", required=True, help="the curve (method family) to compare with")
    parser.add_argument("--curves", nargs="*", default=["extractive:max_tokens=*"], help="curves to print")
    parser.add_argument("--metrics", nargs="*", default=["ans_in_ctx", "sf_all"])
    args = parser.parse_args()
    path = Path(args.result)
    run = json.loads(path.read_text(encoding="utf-8"))
    plain, packed = path.with_suffix(".jsonl"), path.with_suffix(".jsonl.gz")
    opener = (lambda: plain.open(encoding="utf-8")) if plain.is_file() else (lambda: gzip.open(packed, "rt"))
    records: dict[str, list[dict]] = {}
    with opener() as handle:
        for line in handle:
            row = json.loads(line)
            records.setdefault(row["method"], []).append(row)
    budgets = [int(b) for b in run["curves"]["budgets"]]
    result = curves(run["methods"], records, budgets, reference=args.reference)
    for family in args.curves:
        at = result["families"][family]["at"]
        for metric in args.metrics:
            cells = []
            for budget in budgets:
                cell = at.get(str(budget), {}).get(metric)
                if cell:
                    ci = cell.get("diff_ci_ref")
                    cells.append(f"@{budget} {cell['value']:.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""))
            print(f"{family} {metric} vs {args.reference}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
