#!/usr/bin/env bash
# The scorers of issue 29's experiment (benchmarks/scorer.md, benchmarks/headline/scorer.yaml):
#   NASFORGE_CBM_DIR=path/to/channel-bench-macro bash benchmarks/headline/models_scorer.sh
# For each space: the other space's whole table as a corpus, 4,000 score rows of it (10 % networks held
# out), LoRA tuning of SmolLM2-135M-Instruct for 1 epoch (benchmarks/scorer.md, amendment 1) -> OUT/score-on-<other space>; then the gate:
# `finetune eval --task score` of base and adapter on 495 of 500 rows of the searched space (never tuned on).
# Resumable: finished steps are kept (a killed `finetune train` continues with --resume).
set -euo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-headline/models}
CBM=${NASFORGE_CBM_DIR:-../shared/data/channel-bench-macro}
export NASFORGE_CBM_DIR="$CBM"
mkdir -p "$OUT"
for pair in "resnet mobilenet" "mobilenet resnet"; do
  set -- $pair; tuned_on=$1; searched=$2
  $PY -m corpus from-table --space "cbm-$tuned_on" --out "$OUT/cbm-$tuned_on"   # resumes its own journal
  [ -f "$OUT/score-data-$tuned_on/finetune_dataset.json" ] \
    || $PY -m finetune dataset --task score --corpus "$OUT/cbm-$tuned_on" --out "$OUT/score-data-$tuned_on" \
         --sample 4000 --eval-fraction 0.1 --rng-seed 0
  if [ ! -f "$OUT/score-on-$tuned_on/adapter_config.json" ]; then
    resume=""; ls -d "$OUT/score-on-$tuned_on"/checkpoint-* >/dev/null 2>&1 && resume="--resume"
    $PY -m finetune train --corpus "$OUT/score-data-$tuned_on" --model smollm2-135m --out "$OUT/score-on-$tuned_on" \
      --epochs 1 --batch-size 16 --lr 5e-4 --lora-r 16 $resume
  fi
  $PY -m corpus from-table --space "cbm-$searched" --out "$OUT/cbm-$searched-500" --sample 500 --rng-seed 1
  # the gate's rows: all but 5 of the 500 in the eval split (a data set folder: its split is used as it is)
  [ -f "$OUT/gate-data-$searched/finetune_dataset.json" ] \
    || $PY -m finetune dataset --task score --corpus "$OUT/cbm-$searched-500" --out "$OUT/gate-data-$searched" \
         --eval-fraction 0.99 --rng-seed 1
  $PY -m finetune eval --task score --model smollm2-135m --adapter "$OUT/score-on-$tuned_on" \
    --corpus "$OUT/gate-data-$searched" --n 495 --batch-size 64 \
    --out "$OUT/gate-score-on-$tuned_on-searching-$searched.json"
done
