#!/usr/bin/env bash
# The order in which the committed results in benchmarks/results/pear_vit_long/ were made:
# the parts of pear_vit_long.sh's phases that answer the most come first (the claim on the
# task where adapters matter most, then the knowledge checkpoint, then the other tasks), so
# that a stopped budget still leaves the claim answered. Same environment as pear_vit_long.sh
# (DATA, SUITES); every step is resumable, and FROM=N starts at step N (steps 1-5 were made in a
# suite folder since lost: their rows are kept in results.csv, and keep_merged joins the new
# folder's rows to them).
set -euo pipefail
cd "$(dirname "$0")/.."
step=0
run() {  # run ENV... -- PHASE: one step, skipped before $FROM
    step=$((step + 1))
    if [ "$step" -lt "${FROM:-1}" ]; then return 0; fi
    echo "== step $step: $*" >&2
    env "$@"
}
run TASKS=sprites_loc bash benchmarks/pear_vit_long.sh claim
run TASKS=sprites_loc RATIOS=0.5 bash benchmarks/pear_vit_long.sh curve
run TASKS=sprites_loc ABLATIONS="knowledge=none knowledge=frozen knowledge=distill" bash benchmarks/pear_vit_long.sh ablations
run bash benchmarks/pear_vit_long.sh gate
run TASKS=fashion_mnist,sprites_ori RATIOS=0.75 bash benchmarks/pear_vit_long.sh curve
run TASKS=fashion_mnist,sprites_ori RATIOS=0.5 bash benchmarks/pear_vit_long.sh curve
run TASKS=sprites_loc bash benchmarks/pear_vit_long.sh baselines
run TASKS=sprites_loc ABLATIONS="share=nearest share=top1 share=none importance=magnitude importance=random" \
    bash benchmarks/pear_vit_long.sh ablations
run TASKS=fashion_mnist,sprites_ori RATIOS=0.9 bash benchmarks/pear_vit_long.sh curve
run TASKS=fashion_mnist,sprites_ori bash benchmarks/pear_vit_long.sh baselines
run bash benchmarks/pear_vit_long.sh gate_test
run TASKS=fashion_mnist,sprites_ori ABLATIONS="knowledge=none knowledge=frozen knowledge=distill" \
    bash benchmarks/pear_vit_long.sh ablations
run TASKS=fashion_mnist,sprites_ori ABLATIONS="share=nearest share=top1 share=none" \
    bash benchmarks/pear_vit_long.sh ablations
run TASKS=fashion_mnist,sprites_ori ABLATIONS="importance=magnitude importance=random" \
    bash benchmarks/pear_vit_long.sh ablations
run TUNE_METHODS=adapter,pear bash benchmarks/pear_vit_long.sh tune
run TUNE_METHODS=adapter,pear,prune bash benchmarks/pear_vit_long.sh tune  # each call keeps the earlier's tuning runs
run TASKS=sprites_loc RATIOS=0.75 bash benchmarks/pear_vit_long.sh tuned  # the claim at --tune's scale, where adapters matter most
run TASKS=sprites_loc RATIOS="0.9 0.5" FAMILY=pear,prune bash benchmarks/pear_vit_long.sh tuned  # the rest of its curve
run TASKS=fashion_mnist bash benchmarks/pear_vit_long.sh tuned
# sprites_ori: --tune chose s = 1 for adapter and pear there, the scale of their adequacy and curve runs,
# so only prune (s = 4) trains again; the tune phase records the other two choices for the reuse phase
run TASKS=sprites_ori TUNE_METHODS=adapter,pear bash benchmarks/pear_vit_long.sh tune reuse
run TASKS=sprites_ori FAMILY=prune bash benchmarks/pear_vit_long.sh tuned
# the LoRAs' alpha, in a new long_tune folder (steps 15-21's was lost: their records are kept in tuning/,
# and keep_choices makes choices.md from every record kept there); then sprites_loc's adapter record again
run TUNE_METHODS=peft-lora,peft-lora-eq bash benchmarks/pear_vit_long.sh tune
run TASKS=sprites_loc TUNE_METHODS=adapter bash benchmarks/pear_vit_long.sh tune
run FAMILY=peft-lora,peft-lora-eq bash benchmarks/pear_vit_long.sh tuned  # the LoRAs at the alpha --tune chose
# the ablations at pear's tuned scale: sprites_ori chose s = 1, so its s = 1 ablation runs are reused; the others train
run TASKS=sprites_ori FAMILY=pear bash benchmarks/pear_vit_long.sh reuse
run TASKS=fashion_mnist,sprites_loc ABLATIONS="knowledge=none knowledge=frozen knowledge=distill" \
    bash benchmarks/pear_vit_long.sh tuned_ablations
run TASKS=fashion_mnist,sprites_loc ABLATIONS="share=none importance=random" bash benchmarks/pear_vit_long.sh tuned_ablations
# the scale grid widened to 0.1 / 1 / 4 / 16 (the probe at s = 16): the tuning runs again, the task where
# adapters matter most first; a record made over the old grid is chosen again over the new one
run TASKS=sprites_loc,fashion_mnist TUNE_METHODS=adapter,pear,prune bash benchmarks/pear_vit_long.sh tune
# every choice on those two tasks moved to s = 16: the tuned table as it stood (grid 0.1 / 1 / 4) kept in
# tuned_grid3/ and its rows there taken out of tuned/ (benchmarks/regrid.py); the ablations' run folders made
# at s = 4 moved out of the suite folder, so that its tables hold only runs of the new grid
run bash -c 'R=benchmarks/results/pear_vit_long; PYTHONPATH=src .venv/bin/python benchmarks/regrid.py $R/tuned \
    $R/tuning $R/tuned_grid3 --option scale --tasks fashion_mnist,sprites_loc && for t in fashion_mnist sprites_loc; do \
    mkdir -p "$SUITES/long_tune_grid3/runs/$t" && mv "$SUITES/long_tune/runs/$t"/pear@prune_ratio=0.75@* \
    "$SUITES/long_tune_grid3/runs/$t/"; done'
run TASKS=sprites_loc bash benchmarks/pear_vit_long.sh tuned  # adapter, pear and prune at s = 16, 3 seeds
run TASKS=fashion_mnist bash benchmarks/pear_vit_long.sh tuned
run TASKS=sprites_ori TUNE_METHODS=adapter,pear,prune bash benchmarks/pear_vit_long.sh tune  # s = 16 there too
# the tuning runs made again there moved adapter to s = 16, pear to 4 and prune to 1 (val200 on sprites_ori, near
# chance, moves by a few images between folders and machines), so its rows over the old grid are taken out; prune's
# s = 1 curve runs are its tuned runs now (reuse), adapter and pear train again
run bash -c 'R=benchmarks/results/pear_vit_long; PYTHONPATH=src .venv/bin/python benchmarks/regrid.py $R/tuned \
    $R/tuning $R/tuned_grid3 --option scale --tasks sprites_ori --archived'
run TASKS=sprites_ori FAMILY=prune bash benchmarks/pear_vit_long.sh reuse
run TASKS=sprites_ori FAMILY=adapter,pear bash benchmarks/pear_vit_long.sh tuned
# at s = 16 prune led pear on sprites_loc at every ratio: our learned gate on the shared positions there
# (it starts at 1, plain sharing), 3 seeds on the test split, a measurement beside the val200 decision at s = 1
run TASKS=sprites_loc ABLATIONS="gate=scalar" bash benchmarks/pear_vit_long.sh tuned_ablations
# the ablations again at pear's new tuned scale (16 on both tasks; sprites_ori's are the s = 1 runs reused)
# (sharing off and no checkpoint first: they answer the most)
run TASKS=fashion_mnist,sprites_loc ABLATIONS="share=none knowledge=none" bash benchmarks/pear_vit_long.sh tuned_ablations
# (the long_tune folder of steps 22-37 was lost before step 38 finished: steps 38-43 ran in a new one that held only
# the choice records kept in tuning/; a recorded choice stands without its tuning runs, so none trained again)
run TASKS=fashion_mnist,sprites_loc ABLATIONS="knowledge=frozen knowledge=distill importance=random" \
    bash benchmarks/pear_vit_long.sh tuned_ablations
# every choice on fashion_mnist and sprites_loc is the grid's top (16), made at ratio 0.5: s = 64 on val200, and the
# scale chosen apart at ratios 0.75 and 0.9, where the claim's targets are
run TASKS=sprites_loc,fashion_mnist bash benchmarks/pear_vit_long.sh probe64
run TASKS=sprites_loc,fashion_mnist bash benchmarks/pear_vit_long.sh tune_ratio
# sprites_ori at pear's new choice (s = 4): its reused s = 1 ablation runs no longer match, so all of them train
# (the knowledge modes first: they answer the checkpoint's target)
run TASKS=sprites_ori ABLATIONS="knowledge=none knowledge=frozen knowledge=distill" \
    bash benchmarks/pear_vit_long.sh tuned_ablations
run TASKS=sprites_ori ABLATIONS="share=nearest share=top1 share=none importance=magnitude importance=random" \
    bash benchmarks/pear_vit_long.sh tuned_ablations
run TASKS=fashion_mnist,sprites_loc ABLATIONS="share=nearest share=top1 importance=magnitude" \
    bash benchmarks/pear_vit_long.sh tuned_ablations
# the one per-ratio choice that moved (pear at 0.9 on fashion_mnist: s = 4), at 3 seeds
run TASKS=fashion_mnist METHODS=pear@prune_ratio=0.9 bash benchmarks/pear_vit_long.sh tuned_ratio
