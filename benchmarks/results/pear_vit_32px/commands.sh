#!/usr/bin/env bash
# What this session ran, in this order, on the 2-core CPU machine (OMP_NUM_THREADS=1, two runs at a time).
# The built-in weights: .venv/bin/python scripts/pretrain_vit.py --out pretrain --steps 3000 --stop-at 2000 --export src/pear/weights/pear_vit_tiny6_patch4_32.safetensors
# (run as --steps 3000 to step 1400, killed, then resumed with --stop-at 2000; resuming is exact)
# The order this session could afford on 2 shared cores (the full protocol is benchmarks/pear_vit_suite.sh).
set -uo pipefail
cd .
export OMP_NUM_THREADS=1
R=(--data ../data --tasks fashion_mnist,sprites_loc,sprites_ori --backbone pear_vit_tiny6_patch4_32 --epochs 5 --warmup-epochs 1 --batch-size 32 --workers 0 --devices cpu,cpu --build --tune)
P=.venv/bin/pear
$P suite "${R[@]}" --out ../suites/pear_vit --seeds 0 --methods linear,full,adapter,pear,prune,peft-lora
$P suite "${R[@]}" --out ../suites/pear_vit --seeds 1,2 --methods adapter,pear,prune
$P suite "${R[@]}" --out ../suites/pear_vit_random --seeds 0 --methods linear,adapter --weights random
$P suite "${R[@]}" --out ../suites/pear_vit --seeds 0 --methods pear-kc-none,pear-kc-frozen,pear-kc-distill
$P suite "${R[@]}" --out ../suites/pear_vit --seeds 0 --methods pear-share-nearest,pear-share-top1
$P suite "${R[@]}" --out ../suites/pear_vit --seeds 0 --methods pear-r0.25,pear-r0.75,pear-imp-magnitude,pear-imp-random
$P suite "${R[@]}" --out ../suites/pear_vit --seeds 1,2 --methods linear,full,peft-lora
$P suite "${R[@]}" --out ../suites/pear_vit_random --seeds 1,2 --methods linear,adapter --weights random
# transfer per pretraining step (linear probe, seed 0):
for snap in 00750 01500; do
  .venv/bin/pear suite --data ../data --tasks fashion_mnist,sprites_loc,sprites_ori --backbone pear_vit_tiny6_patch4_32 --epochs 5 --warmup-epochs 1 --batch-size 32 --workers 0 --build --weights pretrain/snapshot_$snap.safetensors --methods linear --seeds 0 --out ../suites/curve_snapshot_$snap
done
