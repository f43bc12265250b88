#!/usr/bin/env bash
# The models of the Fashion-MNIST cells of the headline experiment (benchmarks/headline/fm.yaml):
#   bash benchmarks/headline/models_fm.sh      # after benchmarks/headline/models.sh (frozen model, llama.cpp)
# 70 mutator variants per seed family (lenet, vgg-small, resnet-small) and the seed itself (--with-seed: the
# reference of the score and prefer tasks, as in a search; added 2026-12-07), profiled at the search's default
# recipe (8,000 Fashion-MNIST images, batch 32, 300 steps, --fast-cpu auto; until 2026-12-07 batch 64 and
# 150 steps: issue 30's table moved the default); CORPORA_ONLY=1 stops there (no llama.cpp needed). The
# corpora of 2026-12-07 are committed in benchmarks/headline/models/corpus_fm_* (copy them to $OUT to reuse).
# Then for each family F, widths+summary pairs of the two
# other families (5 per source network, 10 % of the sources held out), one epoch of LoRA tuning of
# SmolLM2-135M-Instruct (batch 8, lr 5e-4; OUT/lora_fm_without_F/loss.png), merged, q8_0 GGUF
# OUT/tuned-without-F.q8_0.gguf. FAMILIES picks which adapters (default: all three, in the protocol's
# order). Resumable: finished steps are kept, an interrupted corpus or training continues.
set -euo pipefail
OUT=${OUT:-headline/models}
PY=${PYTHON:-python}
FAMILIES=${FAMILIES:-lenet vgg-small resnet-small}
ALL="lenet vgg-small resnet-small"
for fam in $FAMILIES; do
  case " $ALL " in *" $fam "*) ;; *) echo "error: FAMILIES holds lenet, vgg-small and/or resnet-small, not $fam" >&2; exit 2 ;; esac
done
[ -n "${CORPORA_ONLY:-}" ] || $PY -c "import sentencepiece" 2>/dev/null \
  || { echo "error: llama.cpp's GGUF converter needs sentencepiece: pip install sentencepiece" >&2; exit 2; }
[ -n "${CORPORA_ONLY:-}" ] || [ -d "$OUT/llama.cpp" ] || { echo "error: run benchmarks/headline/models.sh first (llama.cpp converter, frozen model)" >&2; exit 2; }
for fam in $ALL; do
  [ -f "$OUT/variants_fm_$fam/manifest.jsonl" ] || $PY -m mutator generate --seed "$fam" --num 70 --out "$OUT/variants_fm_$fam"
  [ -f "$OUT/corpus_fm_$fam/finished" ] || { $PY -m corpus build --variants "$OUT/variants_fm_$fam" \
    --dataset fashion-mnist --train-limit 8000 --batch-size 32 --min-steps 300 --with-seed --out "$OUT/corpus_fm_$fam" \
    && touch "$OUT/corpus_fm_$fam/finished"; }
done
[ -z "${CORPORA_ONLY:-}" ] || exit 0
for fam in $FAMILIES; do
  others=$(for f in $ALL; do [ "$f" = "$fam" ] || printf '%s/corpus_fm_%s,' "$OUT" "$f"; done)
  [ -d "$OUT/pairs_fm_without_$fam" ] || $PY -m finetune dataset --corpus "${others%,}" --out "$OUT/pairs_fm_without_$fam" \
    --answer-format widths --context summary --pairs-per-parent 5 --eval-fraction 0.1
  [ -f "$OUT/lora_fm_without_$fam/run_card.json" ] || $PY -m finetune train --corpus "$OUT/pairs_fm_without_$fam" \
    --model smollm2-135m --out "$OUT/lora_fm_without_$fam" --epochs 1 --batch-size 8 --lr 5e-4 --logging-steps 2 \
    --save-steps 12 --eval-limit 32 --eval-steps 24 \
    $(compgen -G "$OUT/lora_fm_without_$fam/checkpoint-*" >/dev/null && echo --resume)
  [ -d "$OUT/merged_fm_without_$fam" ] || $PY -m finetune merge --model smollm2-135m --adapter "$OUT/lora_fm_without_$fam" \
    --out "$OUT/merged_fm_without_$fam"
  [ -f "$OUT/tuned-without-$fam.q8_0.gguf" ] || PYTHONPATH="$OUT/llama.cpp/gguf-py:$OUT/llama.cpp" \
    $PY "$OUT/llama.cpp/convert_hf_to_gguf.py" "$OUT/merged_fm_without_$fam" --outfile "$OUT/tuned-without-$fam.q8_0.gguf" --outtype q8_0
done
ls -la "$OUT"/tuned-without-*.gguf
