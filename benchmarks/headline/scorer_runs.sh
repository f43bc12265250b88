#!/usr/bin/env bash
# Issue 29's searches one cell at a time, seeds interleaved (tuned, frozen, tuned, ...), so that a session
# that stops early leaves both configurations with the same seeds. The same runs as scorer.yaml's cells
# (same flags); the stores go to benchmarks/headline/scorer-runs/<cell>/ (committed, ~140 KB a run) and a
# later session continues with the same command (a run that finished is kept; one cut off starts again).
#   NASFORGE_CBM_DIR=path/to/channel-bench-macro CELL=mobilenet bash benchmarks/headline/scorer_runs.sh
#   python benchmarks/scorer_table.py --cell mobilenet --runs "tuned=benchmarks/headline/scorer-runs/mobilenet/scored-tuned-s*" \
#       --runs "frozen=benchmarks/headline/scorer-runs/mobilenet/scored-frozen-s*"
set -euo pipefail
PY=${PYTHON:-python}
CELL=${CELL:-mobilenet}
case "$CELL" in
  mobilenet) space=cbm-mobilenet; budget=""; adapter=benchmarks/headline/models/score-on-resnet ;;
  mobilenet-budget) space=cbm-mobilenet; budget="--max-flops 80984576"; adapter=benchmarks/headline/models/score-on-resnet ;;
  resnet) space=cbm-resnet; budget=""; adapter=benchmarks/headline/models/score-on-mobilenet ;;
  resnet-budget) space=cbm-resnet; budget="--max-flops 543970304"; adapter=benchmarks/headline/models/score-on-mobilenet ;;
  *) echo "error: CELL is one of mobilenet, mobilenet-budget, resnet, resnet-budget, not $CELL" >&2; exit 2 ;;
esac
[ -f "$adapter/adapter_model.safetensors" ] || { echo "error: $adapter: no adapter (bash benchmarks/headline/models_scorer.sh)" >&2; exit 2; }
OUT=${OUT:-benchmarks/headline/scorer-runs/$CELL}
mkdir -p "$OUT"
for s in ${SEEDS:-0 1 2 3 4 5 6 7 8 9}; do
  for cfg in tuned frozen; do
    run="$OUT/scored-$cfg-s$s"
    [ -f "$run/done" ] && continue
    rm -rf "$run"
    extra=""; [ "$cfg" = tuned ] && extra="--scorer-adapter $adapter"
    # shellcheck disable=SC2086
    $PY -m search run --strategy scored --scorer smollm2-135m $extra --scorer-pool 64 --explore 0.1 \
      --improver-llm rule --iterations 20 --evaluator "table:$space" --seed "$space" --rng-seed "$s" $budget \
      --out "$run" >"$run.log" 2>&1 && touch "$run/done" && rm -f "$run.log"
    echo "$(date +%T) $CELL $cfg seed $s: done"
  done
done
