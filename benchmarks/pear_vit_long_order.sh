#!/usr/bin/env bash
# The order in which the committed results in benchmarks/results/pear_vit_long/ were made:
# the parts of pear_vit_long.sh's phases that answer the most come first (the claim on the
# task where adapters matter most, then the knowledge checkpoint, then the other tasks), so
# that a stopped budget still leaves the claim answered. Same arguments as pear_vit_long.sh's
# environment (DATA, SUITES); every step is resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
long() { bash benchmarks/pear_vit_long.sh "$@"; }
TASKS=sprites_loc long claim
TASKS=sprites_loc RATIOS=0.5 long curve
TASKS=sprites_loc ABLATIONS="knowledge=none knowledge=frozen knowledge=distill" long ablations
long gate
TASKS=fashion_mnist,sprites_ori RATIOS=0.75 long curve
TASKS=fashion_mnist,sprites_ori RATIOS=0.5 long curve
TASKS=fashion_mnist,sprites_ori RATIOS=0.9 long curve
long gate_test
TASKS=sprites_loc ABLATIONS="share=nearest share=top1 share=none importance=magnitude importance=random" long ablations
long baselines
long ablations
