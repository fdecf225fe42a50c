#!/usr/bin/env bash
# The LongLLMLingua row for the published table: the same data, seed, retrieval and reader as run_hotpotqa.sh, on the
# first LIMIT (20) of its questions, at the equal budget of that run (BUDGET: the mean tokens `extractive` read there,
# printed in its table header). Separate because LongLLMLingua's compression alone costs more CPU than every other
# row together (about 11 forward passes of the small LM with full-vocabulary logits per question).
#
#   BUDGET=240 bash benchmarks/run_longllmlingua.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/hotpotqa_dev.jsonl}
LIMIT=${LIMIT:-20}
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
: "${BUDGET:?set BUDGET to the equal budget (tokens) of the main run, e.g. BUDGET=240}"
OUT=${OUT:-benchmarks/results/hotpotqa_dev_${LIMIT}_longllmlingua_b${BUDGET}.json}
RAGZIP=${RAGZIP:-$( [ -x .venv/bin/ragzip ] && echo .venv/bin/ragzip || echo ragzip )}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$RAGZIP" bench --data "$DATA" --methods none,longllmlingua --limit "$LIMIT" --top-k 5 --setting faiss --seed 0 \
  --threads "$THREADS" --batch-size "$BATCH" --ttft-questions "$LIMIT" --budget "$BUDGET" --out "$OUT"
