#!/usr/bin/env bash
# The whole pixelport path on the embedded default, end to end (run by `make demo`):
# synthesize -> train -> export (parity-gated) -> serve with Triton -> infer -> evaluate -> benchmark.
# Data and checkpoints in $WORK are reused; `make demo REBUILD=1` makes them anew.
set -euo pipefail
WORK=${WORK:-work}
PY=${PY:-.venv/bin/python}
REBUILD=${REBUILD:-0}
REPO=${REPO:-model_repository}
GRPC_PORT=${GRPC_PORT:-8001}
HTTP_PORT=${HTTP_PORT:-8000}
METRICS_PORT=${METRICS_PORT:-8002}
URL=127.0.0.1:$GRPC_PORT
export PYTHONUNBUFFERED=1

step() { printf '\n=== %s\n' "$*"; }
if [[ "$REBUILD" == 1 ]]; then rm -rf "$WORK"; fi
mkdir -p "$WORK/checkpoints"
DATA=$WORK/data
SECONDS=0

step "1/7 synthetic dataset -> $DATA"
if [[ ! -f $DATA/meta.json ]]; then
  "$PY" -m models synth --out "$DATA" --n-train 600 --n-val 60 --size 128 --seed 0
else echo "reusing $DATA (REBUILD=1 to regenerate)"; fi

step "2/7 train unet segmentation and unet depth (2 cores: one each, in parallel)"
train() {  # name task epochs
  local ckpt=$WORK/checkpoints/$1.pt
  if [[ -f $ckpt && -f $WORK/checkpoints/$1.done ]]; then echo "reusing $ckpt"; return; fi
  local t0=$SECONDS
  "$PY" -m models train --arch unet --task "$2" --data "$DATA" --epochs "$3" --size 128 --threads 1 \
      --no-progress --out "$ckpt" > "$WORK/checkpoints/$1.json"
  echo "$1: $((SECONDS - t0)) s" > "$WORK/checkpoints/$1.done"
}
train seg_unet segmentation 5 & seg_pid=$!
train depth_unet depth 4 & depth_pid=$!
wait $seg_pid; wait $depth_pid
for m in seg_unet depth_unet; do
  echo "$m: trained in $(cut -d' ' -f2 "$WORK/checkpoints/$m.done") s wall; final val:"
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print('  ', {k: v for k, v in r.items() if k != 'checkpoint'})" "$WORK/checkpoints/$m.json"
done

step "3/7 export to ONNX with the parity gate, publish into $REPO"
for m in seg_unet depth_unet; do
  "$PY" -m export --name "$m" --repository "$REPO" --arch unet --checkpoint "$WORK/checkpoints/$m.pt" \
      --version 1 --force
done

step "4/7 start Triton (embedded) on $URL"
STATE=$WORK/serving
"$PY" -m serving start --repository "$REPO" --state-dir "$STATE" --grpc-port "$GRPC_PORT" \
    --http-port "$HTTP_PORT" --metrics-port "$METRICS_PORT"
trap '"$PY" -m serving stop --state-dir "$STATE" || true' EXIT
"$PY" -m serving status --state-dir "$STATE"

step "5/7 batch inference on a few val images, with overlays -> $WORK/infer"
mkdir -p "$WORK/infer_inputs"
ls "$DATA/images/val" | head -6 | while read -r f; do cp "$DATA/images/val/$f" "$WORK/infer_inputs/"; done
"$PY" -m clients infer --url "$URL" --model seg_unet "$WORK/infer_inputs" --out "$WORK/infer/seg" --overlay
"$PY" -m clients infer --url "$URL" --model depth_unet "$WORK/infer_inputs" --out "$WORK/infer/depth"

step "6/7 evaluate: PyTorch in-process vs Triton over gRPC on the val split"
for m in seg_unet depth_unet; do
  "$PY" -m evaluation eval --backend torch --checkpoint "$WORK/checkpoints/$m.pt" --like "$REPO/$m" \
      --data "$DATA" --split val --out "$WORK/eval/$m-torch"
  "$PY" -m evaluation eval --backend triton --url "$URL" --model "$m" --data "$DATA" --split val \
      --concurrency 2 --out "$WORK/eval/$m-triton"
done
"$PY" -m evaluation compare "$WORK"/eval/*-torch "$WORK"/eval/*-triton | tee "$WORK/eval/table.md"

step "7/7 latency of the served segmentation model (perf_analyzer style)"
"$PY" -m benchmarks latency --url "$URL" --model seg_unet --concurrency 1,2,4 --images "$WORK/infer_inputs" \
    --window-s 1.5 --windows 5 --out "$WORK/bench/latency"
echo
echo "demo finished in ${SECONDS} s; outputs under $WORK/ (overlays: $WORK/infer/seg, reports: $WORK/eval)"
echo "variant comparison (about 4 minutes): $PY -m benchmarks compare --checkpoint $WORK/checkpoints/seg_unet.pt --data $DATA --out $WORK/bench/compare"
