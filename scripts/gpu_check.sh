#!/usr/bin/env bash
# The GPU acceptance checks of "The real job at real scale", as one script for a lent GPU machine
# without internet: torch, onnx and onnxruntime are there, the project's other wheels come in
# .whl/ and Fashion-MNIST in .data/fashion-mnist/ (both git-ignored, carried). Prepare them here with
#   bash scripts/gpu_check.sh --prepare
# then run on the device:  bash scripts/gpu_check.sh [EPOCHS_FOR_SCALE]
# with the device tool's carry: [".whl", ".data"] (about 51 MiB of the 64 allowed).
# Results land in $OUT (or out/gpu-check): each stage's JSON and log, and summary.txt. Exits 1 when
# a stage failed or CUDA and CPU training disagree by more than 0.3 points (all stages still run).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo /.data/ >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
    open_clip_torch ftfy wcwidth polygraphy mlxtend regex timm huggingface_hub safetensors tqdm \
    nvidia-modelopt onnx-graphsurgeon onnxslim onnxscript onnx-ir lief ml_dtypes pulp omegaconf \
    antlr4-python3-runtime nvidia-ml-py ninja pydantic pydantic-core annotated-types typing-inspection
  mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
  exit 0
fi

SCALE_EPOCHS=${1:-5}  # a command may run 10 minutes: time a few epochs, the table extrapolates to 50
OUT=${OUT:-out/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 P4Q_NO_PROGRESS=1 P4Q_CACHE=/tmp/p4q-cache
export P4Q_FASHION_MNIST_DIR=$PWD/.data/fashion-mnist
CLI="python3 -m p4q_export.cli"
W8A8=recipes/testbed-p4q-w8a8.yaml
FAILED=0
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
stage() {  # stage NAME CMD...: JSON on $OUT/NAME.json, log on $OUT/NAME.log, wall time in the summary
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
  local rc=$?
  summary "$name: rc=$rc $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || FAILED=1
  return $rc
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# One test bed for both devices: pretrained here on the GPU (seconds).
stage pretrain $CLI pretrain --recipe recipes/testbed-pretrain.yaml --device cuda --json
stage train-cuda $CLI train --recipe $W8A8 --out /tmp/run-cuda --device cuda --json
stage train-cpu $CLI train --recipe $W8A8 --out /tmp/run-cpu --device cpu --workers 0 --json
python3 - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
out = sys.argv[1]
gpu, cpu = (json.load(open(f"{out}/train-{d}.json")) for d in ("cuda", "cpu"))
over = False
for key in ("fp_zeroshot", "ptq_zeroshot", "trained"):
    a, b = gpu["accuracy"][key], cpu["accuracy"][key]
    over |= abs(a - b) > 0.003
    print(f"{key}: cuda {100 * a:.2f} cpu {100 * b:.2f} diff {100 * (a - b):+.2f} points",
          "OK" if abs(a - b) <= 0.003 else "OVER 0.3")
print("cuda timings", gpu["timings"], "cpu timings", cpu["timings"])
sys.exit(1 if over else 0)
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || FAILED=1
stage export $CLI export /tmp/run-cuda --out /tmp/bundle-cuda --device cuda --force --json
stage validate $CLI validate /tmp/bundle-cuda --data fashion-mnist --device cuda --json
stage validate-fp16 $CLI validate /tmp/bundle-cuda --precision fp16 --data fashion-mnist --device cuda --json
# TensorRT: the lent machines have had none; where it imports, build both engines and time them.
if python3 -c "import tensorrt" 2>/dev/null; then
  summary "tensorrt: $(python3 -c 'import tensorrt; print(tensorrt.__version__)')"
  stage build-engine $CLI build-engine /tmp/bundle-cuda --int8 --fp16 --data fashion-mnist --json
  stage bench-trt $CLI bench /tmp/bundle-cuda --device cuda --batch 1,32 --backends trt/int8,trt/fp16 --json
else
  summary "tensorrt: not importable on this machine (no engines built)"
fi
stage torchrun-1gpu python3 -m torch.distributed.run --nproc_per_node 1 -m p4q_export.cli train --recipe $W8A8 \
  --out /tmp/run-torchrun --device cuda --set epochs=5 --json
stage bench-cuda $CLI bench /tmp/bundle-cuda --device cuda --batch 1,32,256 --no-build-engines --json
stage bench-scale python3 -m benchmarks.scale --device cuda --epochs "$SCALE_EPOCHS" --out "$OUT/scale" --quiet
cp "$OUT"/scale/scale.json "$OUT"/scale.json 2>/dev/null
summary "gpu_check: $([ $FAILED -eq 0 ] && echo passed || echo FAILED)"
exit $FAILED
