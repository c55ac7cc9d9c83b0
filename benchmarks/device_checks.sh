#!/usr/bin/env bash
# Every accelerator measurement the open work asks for, in a few minutes,
# for a lent GPU (the `device` tool runs this from the repository root with
# an empty $OUT folder; results come back as JSON lines under $OUT).
#   training memory and step time: float / binary / packed residuals, the
#     4096-wide MLP at batch 1024 and Bi-Real ResNet-18 at batch 256
#     (peak device memory from each variant's own process);
#   MLP training throughput (784-1024x3-10, batch 100);
#   conv training throughput (Larq's tutorial CNN, BinaryNet CNN at 1/4);
#   packed inference (dense and conv).
# Each command has its own time limit, so one slow step does not cost the
# others. Usage: OUT=DIR bash benchmarks/device_checks.sh
set -u
OUT=${OUT:-/tmp/device_checks}
PY=${PY:-python}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
run() {  # run SECONDS NAME COMMAND...
    local limit=$1 name=$2
    shift 2
    timeout "$limit" "$@" > "$OUT/$name.jsonl" 2> "$OUT/$name.err"
    echo "$name: exit $?" >> "$OUT/status.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    > "$OUT/gpu.txt" 2>&1
run 120 train_memory_mlp $PY benchmarks/train_memory.py --model mlp \
    --steps 20 --rounds 4 --max-batch-budget 4294967296
run 150 train_memory_resnet18 $PY benchmarks/train_memory.py \
    --model resnet18 --steps 20 --rounds 4
run 60 train_throughput $PY benchmarks/train_throughput.py \
    --hidden 1024,1024,1024 --batch-size 100 --steps 300 --rounds 3
run 60 conv_train_throughput $PY benchmarks/conv_train_throughput.py \
    --steps 100 --rounds 3
run 60 packed_inference $PY benchmarks/packed_inference.py --rounds 3
run 60 packed_conv_inference $PY benchmarks/packed_conv_inference.py \
    --rounds 3
cat "$OUT/status.txt"
