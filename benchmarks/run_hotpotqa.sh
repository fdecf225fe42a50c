#!/usr/bin/env bash
# Reproduce the published ragzip bench table: 100 HotpotQA dev questions, one FAISS index over every paragraph of the
# file, top-5, the embedded SmolLM2-135M reader, every method that fits in 30 minutes on 2 cores, one process.
# Answers are decoded in batches of 8 (decoding is memory-bound: a batch of 8 costs about what one question costs);
# TTFT is measured on the first 20 questions of each method, each run alone to its first token.
# LongLLMLingua (6.6-55 s of compression per question on this CPU) runs separately on 20 questions at the same
# budget: benchmarks/run_longllmlingua.sh.
#
#   bash benchmarks/run_hotpotqa.sh                 # full run (100 questions), writes benchmarks/results/hotpotqa_dev_100.*
#   LIMIT=5 OUT=/tmp/smoke.json bash benchmarks/run_hotpotqa.sh   # smoke run
#
# Environment: DATA (default ../shared/data/hotpotqa_dev.jsonl), LIMIT (100), TOP_K (5), SEED (0), THREADS (torch
# threads; default 2 = the cores; use 1 when other jobs share the cores, see benchmarks/README.md), BATCH (8),
# TTFT_QUESTIONS (20), METHODS, OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/hotpotqa_dev.jsonl}
LIMIT=${LIMIT:-100}
TOP_K=${TOP_K:-5}
SEED=${SEED:-0}
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
TTFT_QUESTIONS=${TTFT_QUESTIONS:-20}
METHODS=${METHODS:-no_context,none,extractive,truncate,extractive:t0.5,lc_embeddings_filter,li_sentence_optimizer,xrag,refrag}
OUT=${OUT:-benchmarks/results/hotpotqa_dev_${LIMIT}.json}
RAGZIP=${RAGZIP:-$( [ -x .venv/bin/ragzip ] && echo .venv/bin/ragzip || echo ragzip )}

if [ ! -f "$DATA" ]; then
  echo "data file $DATA not found: set DATA=path/to/hotpotqa_dev.jsonl (HotpotQA distractor dev, JSONL)" >&2
  exit 2
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
start=$(date +%s)
"$RAGZIP" bench --data "$DATA" --methods "$METHODS" --limit "$LIMIT" --top-k "$TOP_K" --setting faiss \
  --seed "$SEED" --threads "$THREADS" --batch-size "$BATCH" --ttft-questions "$TTFT_QUESTIONS" --out "$OUT"
echo "wall time: $(( $(date +%s) - start )) s" >&2
