#!/usr/bin/env bash
# Issue 29's searches one cell at a time, seeds interleaved (tuned, frozen, tuned, ...), so that a session
# that stops early leaves both configurations with the same seeds. The same runs as scorer.yaml's cells
# (same flags); the stores go to benchmarks/headline/scorer-runs/<cell>/ (committed, ~140 KB a run) and a
# later session continues with the same command (a run that finished is kept; one cut off starts again).
#   NASFORGE_CBM_DIR=path/to/channel-bench-macro CELL=mobilenet bash benchmarks/headline/scorer_runs.sh
# CONFIGS="gen" (amendment 3 of benchmarks/scorer.md): the tuned scorer with a prefer-tuned generator in its pool
# (benchmarks/headline/models_prefer.sh; the same other-space rule), stores scored-gen-s<seed>.
# CONFIGS="pool" (amendment 8): the tuned scorer choosing among the cell's strongest baseline's next 8 proposals too
# (--pool-from largest; surrogate in resnet-budget) and the draws, stores scored-pool-s<seed>.
#   python benchmarks/scorer_table.py --cell mobilenet --runs "tuned=benchmarks/headline/scorer-runs/mobilenet/scored-tuned-s*" \
#       --runs "frozen=benchmarks/headline/scorer-runs/mobilenet/scored-frozen-s*"
set -euo pipefail
PY=${PYTHON:-python}
CELL=${CELL:-mobilenet}
case "$CELL" in
  mobilenet) space=cbm-mobilenet; budget=""; other=resnet ;;
  mobilenet-budget) space=cbm-mobilenet; budget="--max-flops 80984576"; other=resnet ;;
  resnet) space=cbm-resnet; budget=""; other=mobilenet ;;
  resnet-budget) space=cbm-resnet; budget="--max-flops 543970304"; other=mobilenet ;;
  *) echo "error: CELL is one of mobilenet, mobilenet-budget, resnet, resnet-budget, not $CELL" >&2; exit 2 ;;
esac
adapter=benchmarks/headline/models/score-on-$other; generator=benchmarks/headline/models/prefer-on-$other
strongest=largest; [ "$CELL" = resnet-budget ] && strongest=surrogate   # amendment 8: the cell's strongest baseline
CONFIGS=${CONFIGS:-tuned frozen}
[ -f "$adapter/adapter_model.safetensors" ] || { echo "error: $adapter: no adapter (bash benchmarks/headline/models_scorer.sh)" >&2; exit 2; }
case " $CONFIGS " in *" gen "*) [ -f "$generator/adapter_model.safetensors" ] \
  || { echo "error: $generator: no adapter (bash benchmarks/headline/models_prefer.sh)" >&2; exit 2; } ;; esac
OUT=${OUT:-benchmarks/headline/scorer-runs/$CELL}
mkdir -p "$OUT"
for s in ${SEEDS:-0 1 2 3 4 5 6 7 8 9}; do
  for cfg in $CONFIGS; do
    case "$cfg" in tuned|frozen|gen|pool) ;; *) echo "error: CONFIGS takes tuned, frozen, gen and/or pool, not $cfg" >&2; exit 2 ;; esac
    run="$OUT/scored-$cfg-s$s"
    [ -f "$run/done" ] && continue
    rm -rf "$run"
    extra=""; [ "$cfg" = tuned ] && extra="--scorer-adapter $adapter"
    [ "$cfg" = gen ] && extra="--scorer-adapter $adapter --scorer-generate 4 --generator-prompt prefer \
      --generator-ladder 0.7,1.0,1.3,1.6 --adapter $generator"
    [ "$cfg" = pool ] && extra="--scorer-adapter $adapter --pool-from $strongest --pool-from-n 8"
    # shellcheck disable=SC2086
    $PY -m search run --strategy scored --scorer smollm2-135m $extra --scorer-pool 64 --explore 0.1 \
      --improver-llm rule --iterations 20 --evaluator "table:$space" --seed "$space" --rng-seed "$s" $budget \
      --out "$run" >"$run.log" 2>&1 && touch "$run/done" && rm -f "$run.log"
    echo "$(date +%T) $CELL $cfg seed $s: done"
  done
done
