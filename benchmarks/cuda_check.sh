#!/usr/bin/env bash
# Issue 30's CUDA checks, one prepared script for a lent GPU machine (<= 10 minutes):
#   bash benchmarks/cuda_check.sh            # prints tables; exit 1 if a check failed
# 1. training images/s of the sandboxed proxy (`corpus profile`'s path: channels-last + bf16 autocast, the data
#    set on the device) against a conventional DataLoader loop (fp32, pinned memory) on the same GPU, vgg-small and
#    resnet-small at search run's batch 32 and at 128 (target >= 5x the conventional loop);
# 2. the sandbox's CUDA paths: a candidate over its device-memory share is out of memory and the worker lives on
#    (tests/test_hostile.py), and one search-run-shaped profile on CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rc=0
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "error: no CUDA device visible to torch" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for seed in vgg-small resnet-small; do
  for bs in 32 128; do
    timeout 150 $PY benchmarks/profile_throughput.py --device cuda --seed "$seed" --batch-size "$bs" --repeats 2 || rc=1
  done
done
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_hostile.py -k "gpu or device_memory" || rc=1
f=$(mktemp -d)/seed.py
$PY -c "from mutator import seeds; print(seeds.seed_source('resnet-small'))" > "$f"
timeout 120 $PY -m corpus profile "$f" --dataset fashion-mnist --train-limit 8000 --batch-size 32 --min-steps 300 \
  --device cuda || rc=1
exit $rc
