#!/usr/bin/env bash
# The models of the headline experiment (benchmarks/headline/*.yaml), built on this machine:
#   bash benchmarks/headline/models.sh          # NASFORGE_CBM_DIR: the Channel-Bench-Macro tables
# For each space: 160 configurations from the table (code + table metrics), 576 training / 64 held-out
# widths+summary pairs, one epoch of LoRA tuning of SmolLM2-135M-Instruct (batch 8, lr 5e-4, eval loss
# on 32 held-out pairs every 24 steps; OUT/lora_cbm_*/loss.png), merged and converted to q8_0 GGUF.
# The adapter tuned on cbm-resnet pairs searches cbm-mobilenet and the other way round (no leakage).
# The frozen model is the same base exported and quantised alike. Resumable: finished steps are kept.
set -euo pipefail
OUT=${OUT:-headline/models}
CBM=${NASFORGE_CBM_DIR:-../shared/data/channel-bench-macro}
PY=${PYTHON:-python}
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
for sp in resnet mobilenet; do
  [ -f "$OUT/corpus_cbm_$sp/finished" ] || { $PY -m corpus from-table --space "cbm-$sp" --sample 160 --seed 1 \
    --benchmark-file "$CBM/$sp.json" --out "$OUT/corpus_cbm_$sp" && touch "$OUT/corpus_cbm_$sp/finished"; }
  [ -d "$OUT/pairs_cbm_$sp" ] || $PY -m finetune dataset --corpus "$OUT/corpus_cbm_$sp" --out "$OUT/pairs_cbm_$sp" \
    --answer-format widths --context summary --eval-fraction 0.1
  [ -f "$OUT/lora_cbm_$sp/run_card.json" ] || $PY -m finetune train --corpus "$OUT/pairs_cbm_$sp" --model smollm2-135m \
    --out "$OUT/lora_cbm_$sp" --epochs 1 --batch-size 8 --lr 5e-4 --logging-steps 2 --save-steps 12 \
    --eval-limit 32 --eval-steps 24 $([ -d "$OUT/lora_cbm_$sp" ] && echo --resume)
  [ -d "$OUT/merged_cbm_$sp" ] || $PY -m finetune merge --model smollm2-135m --adapter "$OUT/lora_cbm_$sp" \
    --out "$OUT/merged_cbm_$sp"
  to_gguf "$OUT/merged_cbm_$sp" "$OUT/tuned-on-$sp.q8_0.gguf"
done
[ -d "$OUT/base_hf" ] || $PY -m finetune merge --model smollm2-135m --out "$OUT/base_hf"
to_gguf "$OUT/base_hf" "$OUT/frozen.q8_0.gguf"
ls -la "$OUT"/*.gguf
