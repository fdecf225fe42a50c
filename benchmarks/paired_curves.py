"""Re-read a finished bench run against another reference curve (paired bootstrap at each budget), from its files.

The bench computes intervals against one reference (``--reference``) while it runs; this reads the run's
``RESULT.json`` and per-question ``RESULT.jsonl`` (or ``.jsonl.gz``) and prints curves at the run's budgets against
another curve, e.g. a new classifier against the one before it on the same questions:

    python benchmarks/paired_curves.py benchmarks/results/candidates/v5/evidence_hotpotqa.json --reference "extractive:model=runs/extractive-v3,max_tokens=*"

Runs whose per-question records are not committed (the SQuAD and NQ ones, 50-60 MB) are re-read after re-running
them.
"""

from __future__ import annotations

import argparse

from ragzip.bench import curves_against


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", help="a bench RESULT.json with its RESULT.jsonl(.gz) beside it")
    parser.add_argument("--reference", required=True, help="the curve (method family) to compare with")
    parser.add_argument("--curves", nargs="*", default=["extractive:max_tokens=*"], help="curves to print")
    parser.add_argument("--metrics", nargs="*", default=["ans_in_ctx", "sf_all"])
    args = parser.parse_args()
    result = curves_against(args.result, args.reference)
    unknown = sorted(set(args.curves) - set(result["families"]))
    if unknown:
        parser.error(f"no curve {', '.join(unknown)} in this run; its curves: {', '.join(sorted(result['families']))}")
    for family in args.curves:
        at = result["families"][family]["at"]
        for metric in args.metrics:
            cells = []
            for budget in result["budgets"]:
                cell = at.get(str(budget), {}).get(metric)
                if cell:
                    ci = cell.get("diff_ci_ref")
                    cells.append(f"@{budget} {cell['value']:.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""))
            print(f"{family} {metric} vs {args.reference}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
