#!/usr/bin/env bash
# The main job end to end, offline, on real data (Fashion-MNIST from Debian's package):
# pretrain the small test-bed CLIP (cached), P4Q at W8A8 and W4A4 (+ the FP CoOp baseline),
# export the W8A8 run as an INT8 QDQ bundle, validate it with ONNX Runtime against the PyTorch
# reference, benchmark it on this CPU, and print the accuracy ladder and the latency table.
# Then the transfer test bed: a CLIP pretrained only on rendered glyphs, adapted to MNIST and
# Fashion-MNIST (FP zero-shot, FP CoOp, P4Q W8A8, P4Q W4A4 +text; seed 1).
# Re-running is cheap: finished runs are reused, the pretrained models are cached.
set -euo pipefail
OUT=${P4Q_DEMO_OUT:-out/demo}
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

step "1/7 pretrain the test-bed CLIP (cached after the first run, ~10 min on 2 cores)"
MODEL=$(p4q-export pretrain --recipe recipes/testbed-pretrain.yaml --json | field out)
echo "model: $MODEL" >&2

step "2/7 train: FP CoOp baseline, P4Q W8A8, P4Q W4A4 (text tower quantized too)"
for name in coop p4q-w8a8 p4q-w4a4; do
  p4q-export train --recipe "recipes/testbed-${name}.yaml" --set "model=$MODEL" --out "$OUT/$name" --json > "$OUT/$name.train.json"
done

step "3/7 export the W8A8 run: fold prompts, INT8 QDQ ONNX for TensorRT (the profile it was trained with)"
p4q-export export "$OUT/p4q-w8a8" --out "$OUT/bundle-w8a8" --profile trt --force --json > "$OUT/export.json"

step "4/7 validate: ONNX Runtime (exact Q/DQ arithmetic, the TensorRT stand-in) vs the PyTorch reference"
p4q-export validate "$OUT/bundle-w8a8" --backend ort --data fashion-mnist --json > "$OUT/validate.json"

step "5/7 bench on this CPU"
p4q-export bench "$OUT/bundle-w8a8" --device cpu --batch 1,8 --json > "$OUT/bench.json"

step "6/7 transfer test bed: pretrain on rendered glyphs (cached; ~3 min rendering + ~15-30 min on 2 cores the first time), then CoOp / P4Q on mnist and fashion-mnist"
p4q-export pretrain --recipe recipes/glyphs-pretrain.yaml --json > "$OUT/glyphs-pretrain.json"
python3 scripts/glyphs_ladder.py --seeds 1 --out "$OUT/glyphs"

step "7/7 report"
python3 scripts/demo_report.py "$OUT"
