#!/usr/bin/env bash
# The Fashion-MNIST scorers of issue 29's second stage (benchmarks/scorer.md, amendment 5):
#   bash benchmarks/headline/models_scorer_fm.sh
# For each family F: LoRA tuning of SmolLM2-135M-Instruct on the score rows of the *two other* families' committed
# corpora (benchmarks/headline/models/corpus_fm_*, 70 variants and the seed each; 10 % of the networks held out)
# for 5 epochs
# -> OUT/score-without-F; then the gate: `finetune eval --task score` of base and adapter on F's corpus (never tuned
# on), and `benchmarks/scorer_gate.py --corpus` beside FLOPs and params as predictors.
# The adapters (weights, config, run card, loss plot; no checkpoints) are copied to ADAPTERS (committed:
# scorer_fm.yaml searches with them), the gates beside them. Resumable (a killed `finetune train` continues); data
# and adapters in OUT are kept only while built from the same rows with the same settings (--reuse), else rebuilt.
set -euo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-headline/models}
ADAPTERS=${ADAPTERS:-benchmarks/headline/models}
mkdir -p "$OUT"
corpus() { echo "$ADAPTERS/corpus_fm_$1"; }
for family in ${FAMILIES:-lenet vgg-small resnet-small}; do
  case "$family" in lenet) others="vgg-small resnet-small" ;; vgg-small) others="lenet resnet-small" ;;
    resnet-small) others="lenet vgg-small" ;;
    *) echo "error: FAMILIES takes lenet, vgg-small and/or resnet-small, not $family" >&2; exit 2 ;; esac
  set -- $others
  name="score-without-$family"
  if [ -f "$ADAPTERS/$name/adapter_model.safetensors" ]; then   # committed: not tuned again
    echo "$ADAPTERS/$name is there: not tuned again"
  else
    $PY -m finetune dataset --task score --corpus "$(corpus "$1"),$(corpus "$2")" --out "$OUT/$name-data" \
      --eval-fraction 0.1 --rng-seed 0 --reuse
    resume=""; ls -d "$OUT/$name"/checkpoint-* >/dev/null 2>&1 && resume="--resume"
    $PY -m finetune train --corpus "$OUT/$name-data" --model smollm2-135m --out "$OUT/$name" \
      --epochs 5 --batch-size 16 --lr 5e-4 --lora-r 16 --save-steps 10 --fast-cpu auto --reuse $resume
    mkdir -p "$ADAPTERS/$name"
    for f in adapter_config.json adapter_model.safetensors run_card.json loss.png train_config.json; do
      cp "$OUT/$name/$f" "$ADAPTERS/$name/"
    done
  fi
  # the gate's rows: the family's corpus, all but one network in the eval split (never tuned on)
  $PY -m finetune dataset --task score --corpus "$(corpus "$family")" --out "$OUT/gate-data-fm-$family" \
    --eval-fraction 0.99 --rng-seed 1 --reuse
  $PY -m finetune eval --task score --model smollm2-135m --adapter "$ADAPTERS/$name" \
    --corpus "$OUT/gate-data-fm-$family" --n 71 --batch-size 36 --out "$ADAPTERS/gate-$name.json"
  $PY benchmarks/scorer_gate.py "$ADAPTERS/gate-$name.json" --corpus "$(corpus "$family")" > "$ADAPTERS/gate-$name.md"
  cat "$ADAPTERS/gate-$name.md"
done
