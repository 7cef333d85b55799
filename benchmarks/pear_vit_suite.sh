#!/usr/bin/env bash
# The built-in transformer's results (benchmarks/results/pear_vit_32px/), on a 2-core CPU.
# Run from the repo root after `bash scripts/setup.sh`; every phase is resumable (run it
# again and finished runs are skipped), and each phase is one `pear suite` call:
#
#   bash benchmarks/pear_vit_suite.sh [phases]     # default: "main random ablations lora-eq curve"
#
#   main       linear, full, adapter, pear, prune, peft-lora on the 3 built-in tasks, 3 seeds,
#              with VTAB's tuning protocol (--tune: adapter scale, LoRA alpha)
#   lora-eq    peft-lora-eq (LoRA at the adapters' parameter budget), the same way
#   ablations  share / knowledge checkpoint / prune ratio / importance, 3 seeds, pear's tuned scale
#   random     linear and adapter on the same ViT randomly initialised (the model card's control)
#   curve      linear probes of the pretraining snapshots (transfer quality per CPU minute), seed 0
#
# Two runs at a time (--devices cpu,cpu), one thread each. Suite folders go to $SUITES
# (default ../suites: run folders hold checkpoints); the tables and plots are copied here.
set -euo pipefail
cd "$(dirname "$0")/.."
PEAR=.venv/bin/pear
DATA=${DATA:-../data}
SUITES=${SUITES:-../suites}
RESULTS=benchmarks/results/pear_vit_32px
TASKS=fashion_mnist,sprites_loc,sprites_ori
RECIPE=(--backbone pear_vit_tiny6_patch4_32 --epochs 5 --warmup-epochs 1 --batch-size 32 --workers 0
        --devices cpu,cpu --build)
export OMP_NUM_THREADS=1
mkdir -p "$RESULTS"

source benchmarks/keep.sh  # keep SUITE_FOLDER RESULTS_FOLDER

for phase in ${@:-main random ablations lora-eq curve}; do
    case $phase in
    main)
        $PEAR suite --data "$DATA" --tasks $TASKS --seeds 0,1,2 --out "$SUITES/pear_vit" "${RECIPE[@]}" --tune \
            --methods linear,full,adapter,pear,prune,peft-lora
        keep "$SUITES/pear_vit" "$RESULTS" ;;
    lora-eq)
        $PEAR suite --data "$DATA" --tasks $TASKS --seeds 0,1,2 --out "$SUITES/pear_vit" "${RECIPE[@]}" --tune \
            --methods peft-lora-eq
        keep "$SUITES/pear_vit" "$RESULTS" ;;
    ablations)  # ABLATION_SEEDS=0 for a first pass on one seed
        $PEAR suite --data "$DATA" --tasks $TASKS --seeds "${ABLATION_SEEDS:-0,1,2}" --out "$SUITES/pear_vit" "${RECIPE[@]}" --tune \
            --methods pear-share-nearest,pear-share-top1,pear-kc-none,pear-kc-frozen,pear-kc-distill,pear-r0.25,pear-r0.75,pear-imp-magnitude,pear-imp-random
        keep "$SUITES/pear_vit" "$RESULTS" ;;
    random)
        $PEAR suite --data "$DATA" --tasks $TASKS --seeds 0,1,2 --out "$SUITES/pear_vit_random" "${RECIPE[@]}" \
            --tune --weights random --methods linear,adapter
        keep "$SUITES/pear_vit_random" "$RESULTS/random_init" ;;
    curve)
        # (the final weights' probe is main's linear, seed 0)
        for snap in pretrain/snapshot_00750.safetensors pretrain/snapshot_01500.safetensors; do
            name=$(basename "$snap" .safetensors)
            $PEAR suite --data "$DATA" --tasks $TASKS --seeds 0 --out "$SUITES/curve_$name" "${RECIPE[@]}" \
                --weights "$snap" --methods linear
            keep "$SUITES/curve_$name" "$RESULTS/curve/$name"
        done ;;
    *) echo "unknown phase $phase (main, random, ablations, lora-eq, curve)" >&2; exit 2 ;;
    esac
done
