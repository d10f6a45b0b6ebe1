#!/usr/bin/env bash
# The accelerator check of issue 28, item 4: one short run on a lent GPU, figures into $1 (default $OUT).
#   train images/s, bfloat16, COCO landscape canvas 800x1344, 16 images per step: v1 and v2 recipes;
#   inference latency (batch 1) and throughput (batch 16), v1, bfloat16.
# SIZE and BATCH override the canvas and batch (a quick rehearsal on the CPU: SIZE=256x256 BATCH=1).
# Each benchmark has its own time cap so one slow compile cannot take the others with it.
# The device lacks grain, ml_collections and pycocotools: they travel as wheels in .whl
# (../shared/tools/device_kit.sh lists them); the repository is put on PYTHONPATH, not installed.
set -uo pipefail
out=${1:-$OUT}
size=${SIZE:-800x1344}
batch=${BATCH:-16}
mkdir -p "$out"
if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c 'import jax, jaxlib, flax, optax, numpy; print("jax", jax.__version__, "jaxlib", jaxlib.__version__,
"flax", flax.__version__, "optax", optax.__version__, "numpy", numpy.__version__, jax.devices())'; } 2>&1 | tee "$out/env.txt"

run() {  # NAME SECONDS ARGS...
  local name=$1 seconds=$2; shift 2
  echo "== $name ($seconds s cap)"
  timeout -k 5 "$seconds" python3 benchmarks/benchmark.py "$@" --against=none --size="$size" --noprofile \
    --config.model.dtype=bfloat16 --output="$out/$name.json" 2>&1 | tee "$out/$name.log"
}
run train_v1 200 --task=train --batch="$batch"
run train_v2 180 --config=configs/mask_rcnn_r50_fpn_v2_coco.py --task=train --batch="$batch"
run inference_v1 120 --task=inference --throughput_batch="$batch"
