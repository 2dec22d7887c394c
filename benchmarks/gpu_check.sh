#!/usr/bin/env bash
# GPU figures for the zoo (run once on the lent GPU machine, see README "GPU figures"):
# PyTorch on CUDA at 1024x2048, batch 1: fp32, fp16 autocast, fp16 replayed as a CUDA graph.
# That machine's python3 has torch with CUDA but no onnxruntime-gpu or TensorRT, so only the
# PyTorch rows run there. Trained checkpoints are used when carried in work/checkpoints (carry: ["work/checkpoints"]).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-.}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
ckpts=$(ls work/checkpoints/*.pt 2>/dev/null || true)
PYTHONPATH=. timeout 420 python3 -m benchmarks.gpu_bench --size 1024x2048 --batch 1 \
    --checkpoint $ckpts --out "$OUT_DIR/gpu.json"
