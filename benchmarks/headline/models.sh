#!/usr/bin/env bash
# The models of the headline experiment (benchmarks/headline/*.yaml), built on this machine:
#   bash benchmarks/headline/models.sh          # NASFORGE_CBM_DIR: the Channel-Bench-Macro tables
# For each space: 160 configurations from the table (code + table metrics), 576 training / 64 held-out
# widths+summary pairs, one epoch of LoRA tuning of SmolLM2-135M-Instruct (batch 8, lr 5e-4, eval loss
# on 32 held-out pairs every 24 steps; OUT/lora_cbm_*/loss.png), merged and converted to q8_0 GGUF.
# The adapter tuned on cbm-resnet pairs searches cbm-mobilenet and the other way round (no leakage).
# The frozen model is the same base exported and quantised alike. Resumable: finished steps are kept.
# RECIPE=best (tuning recipe 2, benchmarks/headline.md): best-of-8 targets, prompts with up to 5 tried
# configurations (`finetune dataset --targets best --best-of 8 --history 5 --pairs-per-parent 4`: 514 /
# 516 training pairs), into OUT/*best_cbm_* and OUT/tuned-best-on-*.q8_0.gguf; the rest as above.
# SPACES="resnet" builds only the adapter tuned on that space's pairs (default: "resnet mobilenet").
set -euo pipefail
RECIPE=${RECIPE:-any}
case "$RECIPE" in
  any) R=""; PAIRS_FLAGS=""; TRAIN_FLAGS="" ;;
  # recipe 2's prompts run to 832 tokens: without activation checkpointing the first (longest) batch of 8
  # needed > 21 GB here (OOM-killed on 24 GB); checkpointing recomputes, the gradients are the same
  best) R="best_"; PAIRS_FLAGS="--targets best --best-of 8 --history 5 --pairs-per-parent 4"
        TRAIN_FLAGS="--gradient-checkpointing" ;;
  *) echo "error: RECIPE must be any or best, not $RECIPE" >&2; exit 2 ;;
esac
SPACES=${SPACES:-resnet mobilenet}
for sp in $SPACES; do
  case "$sp" in resnet|mobilenet) ;; *) echo "error: SPACES holds resnet and/or mobilenet, not $sp" >&2; exit 2 ;; esac
done
PY=${PYTHON:-python}
# llama.cpp's GGUF converter needs sentencepiece; say so now, not after an hour of training
$PY -c "import sentencepiece" 2>/dev/null \
  || { echo "error: llama.cpp's GGUF converter needs sentencepiece: pip install sentencepiece" >&2; exit 2; }
OUT=${OUT:-headline/models}
CBM=${NASFORGE_CBM_DIR:-../shared/data/channel-bench-macro}
mkdir -p "$OUT"
if [ ! -d "$OUT/llama.cpp" ]; then  # llama.cpp's HF -> GGUF converter, from the llama-cpp-python sdist
  $PY -m pip download --no-deps --no-binary :all: "llama-cpp-python==0.3.36" -d "$OUT/sdist"
  tar xzf "$OUT"/sdist/llama_cpp_python-*.tar.gz -C "$OUT/sdist"
  mv "$OUT"/sdist/llama_cpp_python-*/vendor/llama.cpp "$OUT/llama.cpp" && rm -rf "$OUT/sdist"
fi
to_gguf() {  # HF folder -> q8_0 GGUF
  [ -f "$2" ] || PYTHONPATH="$OUT/llama.cpp/gguf-py:$OUT/llama.cpp" $PY "$OUT/llama.cpp/convert_hf_to_gguf.py" "$1" \
    --outfile "$2" --outtype q8_0
}
for sp in $SPACES; do
  [ -f "$OUT/corpus_cbm_$sp/finished" ] || { $PY -m corpus from-table --space "cbm-$sp" --sample 160 --rng-seed 1 \
    --benchmark-file "$CBM/$sp.json" --out "$OUT/corpus_cbm_$sp" && touch "$OUT/corpus_cbm_$sp/finished"; }
  # shellcheck disable=SC2086  # PAIRS_FLAGS: several flags
  [ -d "$OUT/pairs_${R}cbm_$sp" ] || $PY -m finetune dataset --corpus "$OUT/corpus_cbm_$sp" --out "$OUT/pairs_${R}cbm_$sp" \
    --answer-format widths --context summary --eval-fraction 0.1 $PAIRS_FLAGS
  [ -f "$OUT/lora_${R}cbm_$sp/run_card.json" ] || $PY -m finetune train --corpus "$OUT/pairs_${R}cbm_$sp" --model smollm2-135m \
    --out "$OUT/lora_${R}cbm_$sp" --epochs 1 --batch-size 8 --lr 5e-4 --logging-steps 2 --save-steps 12 \
    --eval-limit 32 --eval-steps 24 $TRAIN_FLAGS \
    $(compgen -G "$OUT/lora_${R}cbm_$sp/checkpoint-*" >/dev/null && echo --resume)
  [ -d "$OUT/merged_${R}cbm_$sp" ] || $PY -m finetune merge --model smollm2-135m --adapter "$OUT/lora_${R}cbm_$sp" \
    --out "$OUT/merged_${R}cbm_$sp"
  to_gguf "$OUT/merged_${R}cbm_$sp" "$OUT/tuned-${R/_/-}on-$sp.q8_0.gguf"
done
[ -d "$OUT/base_hf" ] || $PY -m finetune merge --model smollm2-135m --out "$OUT/base_hf"
to_gguf "$OUT/base_hf" "$OUT/frozen.q8_0.gguf"
ls -la "$OUT"/*.gguf
