#!/usr/bin/env bash
# The evidence bench: what survives compression on the three dev sets, no reader in the loop (`--no-generate`).
# Every text method is swept over its own knob; the report reads each curve at 64/128/256 tokens read, with paired
# bootstrap 95% intervals against the reference curve (REFERENCE, default: LangChain EmbeddingsFilter k=1..3).
#
#   bash benchmarks/run_evidence.sh                       # all three datasets, writes benchmarks/results/evidence_*
#   SETS=hotpotqa LIMIT=50 OUT_DIR=/tmp/ev bash benchmarks/run_evidence.sh   # a smoke run
#   PROFILE=core bash benchmarks/run_evidence.sh          # 11 settings (none, truncate, ragzip extractive, EmbeddingsFilter)
#
# Datasets (one command each, below):
#   hotpotqa  HotpotQA dev, all 209 questions, distractor setting (each question's 10 paragraphs, `--setting given`)
#   hotpotqa_faiss  HotpotQA dev, all 209 questions, FAISS top-5 over the file's paragraphs (not in SETS by default)
#   squad     SQuAD dev, 1,000 questions, own paragraph among 4 other paragraphs of the same article, shuffled
#   nq        NQ-open dev, 1,000 questions that have a gold passage, FAISS top-5 over the file's passages
#
# Environment: DATA_DIR (../shared/data), SETS ("hotpotqa squad nq"), LIMIT (per set: 209 / 1000 / 1000), THREADS (2),
# PROFILE (all: every text method, 20 settings; core: the 11 settings without the LlamaIndex optimizer and
# ragcompress, about 9 min for the three sets on 2 idle cores), METHODS (overrides PROFILE), REFERENCE,
# OUT_DIR (benchmarks/results), EXTRA (more `ragzip bench` options, e.g. --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-../shared/data}
SETS=${SETS:-hotpotqa squad nq}
THREADS=${THREADS:-2}
OUT_DIR=${OUT_DIR:-benchmarks/results}
REFERENCE=${REFERENCE:-lc_embeddings_filter:k=*}
CORE=none,truncate:64/128/256,extractive,extractive:max_tokens=64/128/256,lc_embeddings_filter:k=1/2/3
case ${PROFILE:-all} in
  all) DEFAULT_METHODS=$CORE,li_sentence_optimizer:p0.2/0.5/0.8,ragcompress:budget=64/128/256 ;;
  core) DEFAULT_METHODS=$CORE ;;
  *) echo "unknown PROFILE ${PROFILE} (all, core)" >&2; exit 2 ;;
esac
METHODS=${METHODS:-$DEFAULT_METHODS}
RAGZIP=${RAGZIP:-$( [ -x .venv/bin/ragzip ] && echo .venv/bin/ragzip || echo ragzip )}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

run() {  # name data limit options...
  local name=$1 data=$2 limit=$3; shift 3
  if [ ! -f "$data" ]; then
    echo "data file $data not found: set DATA_DIR (see ../shared/data/SOURCES.md)" >&2
    exit 2
  fi
  local start; start=$(date +%s)
  "$RAGZIP" bench --no-generate --quiet --data "$data" --methods "$METHODS" --limit "${LIMIT:-$limit}" --seed 0 \
    --threads "$THREADS" --batch-size 8 --reference "$REFERENCE" --budgets 64,128,256,25% --out "$OUT_DIR/evidence_$name.json" "$@" ${EXTRA:-}
  echo "$name: wall time $(( $(date +%s) - start )) s" >&2
}

for set in $SETS; do
  case $set in
    hotpotqa) run hotpotqa "$DATA_DIR/hotpotqa_dev.jsonl" 209 --setting given ;;
    hotpotqa_faiss) run hotpotqa_faiss "$DATA_DIR/hotpotqa_dev.jsonl" 209 --setting faiss --top-k 5 ;;
    squad) run squad "$DATA_DIR/squad_dev.jsonl" 1000 --setting given --distractors 4 ;;
    nq) run nq "$DATA_DIR/nq_open_dev.jsonl" 1000 --setting faiss --top-k 5 --require-gold ;;
    *) echo "unknown set $set (hotpotqa, hotpotqa_faiss, squad, nq)" >&2; exit 2 ;;
  esac
done
