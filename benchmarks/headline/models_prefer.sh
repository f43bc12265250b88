#!/usr/bin/env bash
# The generators of issue 29's amendment 3 (benchmarks/scorer.md): a prefer-tuned SmolLM2-135M per searched space,
# tuned only on the *other* space's table (no leakage), as the scorers are:
#   NASFORGE_CBM_DIR=path/to/channel-bench-macro bash benchmarks/headline/models_prefer.sh
# For each space: the other space's whole table as a corpus, 4,000 preference pairs across rank strata (10 % of
# the networks held out), DPO (trl's DPOTrainer) LoRA tuning for 200 steps of 8 pairs (beta 0.1; bf16 autocast
# where the CPU has bf16 instructions: amendment 4) ->
# OUT/prefer-on-<other space>; then `finetune eval --task prefer` of base and adapter on 200 held-out pairs.
# The adapters (weights, config, run card, loss plot; no checkpoints) are copied to ADAPTERS
# (benchmarks/headline/models, committed: scorer_runs.sh CONFIGS=gen searches with them), the eval beside them.
# Resumable: finished steps are kept (a killed `finetune train` continues with --resume); data and adapters in
# OUT are kept only while built from the same rows with the same settings (--reuse), else rebuilt.
set -euo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-headline/models}
ADAPTERS=${ADAPTERS:-benchmarks/headline/models}
CBM=${NASFORGE_CBM_DIR:-../shared/data/channel-bench-macro}
export NASFORGE_CBM_DIR="$CBM"
mkdir -p "$OUT"
for tuned_on in ${TUNED_ON:-resnet mobilenet}; do   # TUNED_ON=resnet: only the generator tuned on ResNet's table
  case "$tuned_on" in resnet|mobilenet) ;;
    *) echo "error: TUNED_ON takes resnet and/or mobilenet, not $tuned_on" >&2; exit 2 ;; esac
  if [ -f "$ADAPTERS/prefer-on-$tuned_on/adapter_model.safetensors" ]; then   # committed: not tuned again
    echo "$ADAPTERS/prefer-on-$tuned_on is there: not tuned again"
    continue
  fi
  $PY -m corpus from-table --space "cbm-$tuned_on" --out "$OUT/cbm-$tuned_on"   # resumes its own journal
  $PY -m finetune dataset --task prefer --corpus "$OUT/cbm-$tuned_on" --out "$OUT/prefer-data-$tuned_on" \
    --sample 4000 --eval-fraction 0.1 --rng-seed 0 --reuse
  resume=""; ls -d "$OUT/prefer-on-$tuned_on"/checkpoint-* >/dev/null 2>&1 && resume="--resume"
  $PY -m finetune train --corpus "$OUT/prefer-data-$tuned_on" --model smollm2-135m --out "$OUT/prefer-on-$tuned_on" \
    --max-steps 200 --batch-size 8 --beta 0.1 --fast-cpu auto --reuse $resume
  mkdir -p "$ADAPTERS/prefer-on-$tuned_on"
  for f in adapter_config.json adapter_model.safetensors run_card.json loss.png train_config.json; do
    cp "$OUT/prefer-on-$tuned_on/$f" "$ADAPTERS/prefer-on-$tuned_on/"
  done
  $PY -m finetune eval --task prefer --model smollm2-135m --adapter "$ADAPTERS/prefer-on-$tuned_on" \
    --corpus "$OUT/prefer-data-$tuned_on" --n 200 --batch-size 16 --out "$ADAPTERS/eval-prefer-on-$tuned_on.json"
done
