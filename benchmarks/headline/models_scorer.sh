#!/usr/bin/env bash
# The scorers of issue 29's experiment (benchmarks/scorer.md, benchmarks/headline/scorer.yaml):
#   NASFORGE_CBM_DIR=path/to/channel-bench-macro bash benchmarks/headline/models_scorer.sh
# For each space: the other space's whole table as a corpus, 4,000 score rows of it (10 % networks held
# out), LoRA tuning of SmolLM2-135M-Instruct for 1 epoch (benchmarks/scorer.md, amendment 1) -> OUT/score-on-<other space>; then the gate:
# `finetune eval --task score` of base and adapter on 495 of 500 rows of the searched space (never tuned on).
# The adapters themselves (weights, config, run card, loss plot; no checkpoints) are copied to ADAPTERS
# (benchmarks/headline/models, committed: scorer.yaml searches with them), the gate's results beside them.
# Resumable: finished steps are kept (a killed `finetune train` continues with --resume); data and adapters in
# OUT are kept only while built from the same rows with the same settings (--reuse), else rebuilt.
# DTYPE=bfloat16: the gate scored as `search run --scorer-dtype bfloat16` scores (adapter merged, bf16 weights),
# written beside the float32 one as gate-...-bfloat16.json.
set -euo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-headline/models}
ADAPTERS=${ADAPTERS:-benchmarks/headline/models}
DTYPE=${DTYPE:-float32}
suffix=""; [ "$DTYPE" = float32 ] || suffix="-$DTYPE"
CBM=${NASFORGE_CBM_DIR:-../shared/data/channel-bench-macro}
export NASFORGE_CBM_DIR="$CBM"
mkdir -p "$OUT"
for tuned_on in ${TUNED_ON:-resnet mobilenet}; do   # TUNED_ON=resnet: only the scorer tuned on ResNet's table
  case "$tuned_on" in resnet) searched=mobilenet ;; mobilenet) searched=resnet ;;
    *) echo "error: TUNED_ON takes resnet and/or mobilenet, not $tuned_on" >&2; exit 2 ;; esac
  if [ -f "$ADAPTERS/score-on-$tuned_on/adapter_model.safetensors" ]; then   # committed: not tuned again
    echo "$ADAPTERS/score-on-$tuned_on is there: not tuned again"
  else
    $PY -m corpus from-table --space "cbm-$tuned_on" --out "$OUT/cbm-$tuned_on"   # resumes its own journal
    $PY -m finetune dataset --task score --corpus "$OUT/cbm-$tuned_on" --out "$OUT/score-data-$tuned_on" \
      --sample 4000 --eval-fraction 0.1 --rng-seed 0 --reuse
    resume=""; ls -d "$OUT/score-on-$tuned_on"/checkpoint-* >/dev/null 2>&1 && resume="--resume"
    $PY -m finetune train --corpus "$OUT/score-data-$tuned_on" --model smollm2-135m --out "$OUT/score-on-$tuned_on" \
      --epochs 1 --batch-size 16 --lr 5e-4 --lora-r 16 --reuse $resume
    mkdir -p "$ADAPTERS/score-on-$tuned_on"
    for f in adapter_config.json adapter_model.safetensors run_card.json loss.png train_config.json; do
      cp "$OUT/score-on-$tuned_on/$f" "$ADAPTERS/score-on-$tuned_on/"
    done
  fi
  $PY -m corpus from-table --space "cbm-$searched" --out "$OUT/cbm-$searched-500" --sample 500 --rng-seed 1
  # the gate's rows: all but 5 of the 500 in the eval split (a data set folder: its split is used as it is)
  $PY -m finetune dataset --task score --corpus "$OUT/cbm-$searched-500" --out "$OUT/gate-data-$searched" \
    --eval-fraction 0.99 --rng-seed 1 --reuse
  $PY -m finetune eval --task score --model smollm2-135m --adapter "$ADAPTERS/score-on-$tuned_on" \
    --corpus "$OUT/gate-data-$searched" --n 495 --batch-size 64 --dtype "$DTYPE" \
    --out "$ADAPTERS/gate-score-on-$tuned_on-searching-$searched$suffix.json"
done
