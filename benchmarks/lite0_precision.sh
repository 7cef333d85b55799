#!/usr/bin/env bash
# EfficientNet-Lite0 (the default backbone, built-in ImageNet weights) in bf16 against fp32 on the CPU:
# pear on fashion_mnist at the Lite0 recipe (112 px, 5 epochs, 1 warm-up epoch, batch 32), 3 seeds,
# one run at a time on one thread. Does bf16 keep its accuracy, where the CPU makes it faster
# (benchmarks/throughput.py)? Tables go to $RESULTS/{bf16,fp32}; suite folders to $SUITES.
set -euo pipefail
cd "$(dirname "$0")/.."
PEAR=.venv/bin/pear
DATA=${DATA:-../data}
SUITES=${SUITES:-../suites}
RESULTS=${RESULTS:-benchmarks/results/lite0_precision}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
source benchmarks/keep.sh
for p in ${PRECISIONS:-bf16 fp32}; do
    $PEAR suite --data "$DATA" --tasks fashion_mnist --seeds 0,1,2 --out "$SUITES/lite0_precision_$p" \
        --backbone tf_efficientnet_lite0 --img-size 112 --epochs 5 --warmup-epochs 1 --batch-size 32 --workers 0 \
        --build -c "benchmarks/configs/$p.yaml" --methods pear
    keep "$SUITES/lite0_precision_$p" "$RESULTS/$p"
done
