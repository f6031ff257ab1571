#!/usr/bin/env bash
# The GPU numbers of the README in ONE command for an NVIDIA machine without network (an H200
# lent by the device tool); about 8 minutes; every number goes to $OUT (default runs/gpu-check):
#   trainer-0.5b.json, trainer-1.5b.json   bf16-autocast policy update, fp32 master weights, AdamW:
#                                          tokens/s, share of the card's bf16 peak, peak memory
#   trainer-1.5b-lora.json                 the same with LoRA r=16 (peft)
#   generation.txt                         transformers-backend rollout throughput (tiny model)
#   default-run/                           `creditgym train --config configs/default.yaml` with the
#                                          model on the GPU (bm25s retrieval: no Java there)
#   gpu_check.log                          everything printed, with the wall time of each step
# The machine has torch, transformers, peft, rich, tqdm; the rest travels as wheels in .whl/
# (ignored by git), fetched here once with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl gymnasium==1.4.0 farama-notifications==0.0.4 \
#     cloudpickle bm25s PyStemmer
# then: device run, carry [".whl"], command "bash benchmarks/gpu_check.sh".
# A step that fails or runs past its limit is logged and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OPENAI_API_KEY=dummy
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  echo "=== $name (limit ${limit}s) $(date -u +%FT%TZ)" >>"$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "=== $name: exit $? after $((SECONDS - t0))s" >>"$LOG"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
transformers.__version__, torch.cuda.get_device_name())" >>"$LOG" 2>&1
step trainer-0.5b 90 python3 benchmarks/trainer.py --model 0.5b --seq-len 1024 4096 --batch 16 \
  --steps 3 --json "$OUT/trainer-0.5b.json"
step trainer-1.5b 120 python3 benchmarks/trainer.py --model 1.5b --seq-len 1024 4096 --batch 16 \
  --steps 3 --json "$OUT/trainer-1.5b.json"
step trainer-1.5b-lora 90 python3 benchmarks/trainer.py --model 1.5b --lora-r 16 --seq-len 4096 \
  --batch 16 --steps 3 --json "$OUT/trainer-1.5b-lora.json"
step generation 60 python3 benchmarks/generation.py --device cuda --batches 1 32 128 \
  --threads 4 >"$OUT/generation.txt"
step default-run 150 python3 -m creditgym.cli train --config configs/default.yaml \
  --set run_dir="$OUT/default-run" --set env.kwargs.world_backend=bm25s --set threads=8
echo "done $(date -u +%FT%TZ)" >>"$LOG"
