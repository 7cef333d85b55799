#!/usr/bin/env bash
# The built-in transformer on the built-in tasks with a recipe long enough for adapters to
# matter (benchmarks/results/pear_vit_long/), on a 2-core CPU in bf16 (AMX). Run from the
# repo root after `bash scripts/setup.sh`; every phase is resumable (run it again and
# finished runs are skipped), and each phase is `pear suite` calls:
#
#   bash benchmarks/pear_vit_long.sh [phases]    # default: "epochs adequacy claim curve baselines ablations"
#
#   epochs     the recipe curve: adapter (s = 1) trained on train800 for 10/20/30/50 epochs,
#              val200 after the last epoch, seed 0 (chooses EPOCHS below)
#   adequacy   linear and adapter (s = 1), 3 seeds: is the testbed able to separate methods
#              (adapter - linear >= 10 points on the mean, adapter std <= 1.5 on each task)?
#   claim      pear and prune (s = 1) at prune ratios 0.75 and 0.9 on sprites_loc, 3 seeds
#   precision  bf16 (the CPU default with AMX) against fp32: pear, fashion_mnist, 3 seeds, 5 epochs
#   curve      pear and prune (s = 1) at prune ratios 0.75 / 0.9 / 0.5, 3 seeds ($TASKS)
#   baselines  full, peft-lora and peft-lora-eq, 3 seeds ($TASKS)
#   ablations  pear at ratio 0.75, s = 1: share / knowledge checkpoint / importance, 3 seeds ($TASKS)
#   gate       ours: pear at 0.75 with a learned scalar gate per shared position against without,
#              trained on train800 and scored on val200 (the decision), 3 seeds
#   gate_test  the gate on the test split (sprites_loc, 3 seeds)
#   tune       VTAB's protocol, its tuning runs only (pear suite --tune --tune-only): s for adapter / pear /
#              prune (0.1, 1, 4, 16; pear and prune at their default ratio 0.5) and alpha for the LoRAs (8, 32,
#              128), each trained on train800 and scored on val200, seed 0: is s = 1 (and the LoRAs'
#              default alpha) what the protocol would have chosen for the runs above?
#   tuned      adapter, pear and prune at the scale the tune phase chose (pear suite --tune, the same
#              folder: its tuning runs are reused), 3 seeds; tables and claim.md in tuned/ (FAMILY=peft-lora,
#              peft-lora-eq: the LoRAs at the alpha it chose; claim.md then shows them in place of the default's)
#   tuned_ablations  the ablations (as in ablations) at pear's tuned scale, 3 seeds ($TASKS, $ABLATIONS), in tuned/
#   probe64    adapter, pear and prune at s = 64 on val200 (seed 0): does the scale grid stop too early?
#   tune_ratio pear's and prune's scale tuned apart at each ratio (--tune-each prune_ratio), tuning runs only
#   tuned_ratio  $METHODS at 3 seeds at the scale tune_ratio chose for them (where it differs from the tune phase's)
#   reuse      the tuned table's rows for $FAMILY (default adapter,pear) on $TASKS where the tune phase chose
#              s = 1: the adequacy, curve and ablations phases' s = 1 runs are those runs (same recipe, seeds, split)
#   report     claim.md / claim.png / headline.md (benchmarks/claim_curve.py): the curve, pear - prune, targets;
#              the same tables into docs/results.md
#
# $TASKS, $RATIOS (curve, tuned), $FAMILY (tuned, reuse: e.g. FAMILY=pear,prune), $ABLATIONS (e.g. "knowledge=none share=top1") and $TUNE_METHODS pick a
# part of a phase, so the runs that answer the most come first (benchmarks/pear_vit_long_order.sh).
#
# Every adapter method trains at s = 1, the scale the recipe curve and the adequacy check used;
# the tune phase checks that choice against --tune's (which would retrain every seed where it differs).
# claim, curve and ablations share one suite folder ($SUITES/long), so a run that two phases name
# trains once; each phase's tables (results.md / results.csv) cover every finished run in it.
#
# Two runs at a time (--devices cpu,cpu), one thread each. Suite folders go to $SUITES
# (default ../suites: run folders hold checkpoints); the tables and plots are copied here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PEAR=.venv/bin/pear
DATA=${DATA:-../data}
SUITES=${SUITES:-../suites}
RESULTS=benchmarks/results/pear_vit_long
ALL_TASKS=fashion_mnist,sprites_loc,sprites_ori
TASKS=${TASKS:-$ALL_TASKS}  # e.g. TASKS=sprites_loc for the task where adapters matter most first
EPOCHS=${EPOCHS:-30}
BASE=(--backbone pear_vit_tiny6_patch4_32 --batch-size 32 --workers 0 --devices cpu,cpu --build)
RECIPE=("${BASE[@]}" --epochs "$EPOCHS")
export OMP_NUM_THREADS=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's Pear, even from a second worktree
mkdir -p "$RESULTS"

source benchmarks/keep.sh  # keep / keep_merged SUITE_FOLDER RESULTS_FOLDER

tuned_claim() {  # claim.md, claim.png and headline.md of the tuned table (full and the LoRAs: the baselines phase's)
    $PY benchmarks/claim_curve.py "$RESULTS/adequacy/results.csv" "$RESULTS/tuned/results.csv" "$RESULTS/results.csv" \
        --scale tuned --out "$RESULTS/tuned"
}
ratios() {  # pear and prune at s = 1 for each prune ratio given: one --methods list
    AT=@scale=1 ratios_at "$@"
}
ratios_at() {  # the same at $AT ('' for --tune's runs, which name no scale)
    local out="" r
    for r in "$@"; do out+="${out:+,}pear$AT@prune_ratio=$r,prune$AT@prune_ratio=$r"; done
    echo "$out"
}

for phase in ${@:-epochs adequacy claim curve baselines ablations}; do
    case $phase in
    epochs)
        for e in 10 20 30 50; do
            $PEAR suite --data "$DATA" --tasks $TASKS --seeds 0 --out "$SUITES/long_epochs_$e" "${BASE[@]}" \
                --epochs "$e" -c benchmarks/configs/select_val200.yaml --methods adapter@scale=1
        done
        $PY benchmarks/recipe_curve.py "$SUITES"/long_epochs_{10,20,30,50} --out "$RESULTS/recipe_curve.md" ;;
    adequacy)  # adapter at s = 1, the recipe curve's scale (no --tune: it would triple the cost)
        $PEAR suite --data "$DATA" --tasks $TASKS --seeds 0,1,2 --out "$SUITES/long_adequacy" "${RECIPE[@]}" \
            --methods linear,adapter@scale=1
        keep "$SUITES/long_adequacy" "$RESULTS/adequacy" ;;
    claim)  # sharing where most adapters are gone, on the task where adapters matter most, s = 1
        $PEAR suite --data "$DATA" --tasks sprites_loc --seeds 0,1,2 --out "$SUITES/long" "${RECIPE[@]}" \
            --methods "$(ratios 0.75 0.9)"
        keep_merged "$SUITES/long" "$RESULTS" ;;
    precision)  # bf16 (the CPU default with AMX) against fp32, pear on fashion_mnist, 3 seeds, the demo's 5 epochs
        for p in bf16 fp32; do
            cfg=(); [ $p = fp32 ] && cfg=(-c benchmarks/configs/fp32.yaml)
            $PEAR suite --data "$DATA" --tasks fashion_mnist --seeds 0,1,2 --out "$SUITES/precision_$p" "${BASE[@]}" \
                --epochs 5 --warmup-epochs 1 "${cfg[@]}" --methods pear
            keep "$SUITES/precision_$p" "$RESULTS/precision/$p"
        done ;;
    curve)  # the claim's runs are reused (same folder, same options); linear and adapter are the adequacy phase's
        $PEAR suite --data "$DATA" --tasks "$TASKS" --seeds 0,1,2 --out "$SUITES/long" "${RECIPE[@]}" \
            --methods "$(ratios ${RATIOS:-0.75 0.9 0.5})"
        keep_merged "$SUITES/long" "$RESULTS" ;;
    baselines)  # the rest of the plot's points: full fine-tuning and the LoRAs (default alpha)
        $PEAR suite --data "$DATA" --tasks "$TASKS" --seeds 0,1,2 --out "$SUITES/long" "${RECIPE[@]}" \
            --methods full,peft-lora,peft-lora-eq
        keep_merged "$SUITES/long" "$RESULTS" ;;
    ablations)  # pear at ratio 0.75, s = 1, one component changed at a time (the default is the claim's run)
        abl=""
        for v in ${ABLATIONS:-knowledge=none knowledge=frozen knowledge=distill share=nearest share=top1 share=none \
                 importance=magnitude importance=random}; do abl+="${abl:+,}pear@scale=1@prune_ratio=0.75@$v"; done
        $PEAR suite --data "$DATA" --tasks "$TASKS" --seeds 0,1,2 --out "$SUITES/long" "${RECIPE[@]}" --methods "$abl"
        keep_merged "$SUITES/long" "$RESULTS" ;;
    gate)  # ours: a learned scalar on the shared adapter's output at each pruned position; val200 decides
        G=pear@scale=1@prune_ratio=0.75
        $PEAR suite --data "$DATA" --tasks sprites_loc --seeds 0,1,2 --out "$SUITES/long_gate_val200" "${RECIPE[@]}" \
            -c benchmarks/configs/select_val200.yaml --methods "$G,$G@gate=scalar"
        keep "$SUITES/long_gate_val200" "$RESULTS/gate_val200"  # results.md there: the test split, for reference
        $PY benchmarks/recipe_curve.py "$SUITES/long_gate_val200" --out "$RESULTS/gate_val200/val200.md" ;;
    gate_test)  # the gate on the test split, beside the claim's pear at 0.75
        G=pear@scale=1@prune_ratio=0.75
        $PEAR suite --data "$DATA" --tasks sprites_loc --seeds 0,1,2 --out "$SUITES/long" "${RECIPE[@]}" --methods "$G@gate=scalar"
        keep_merged "$SUITES/long" "$RESULTS" ;;
    tune)  # the protocol's choices, before (or instead of) paying for its real runs
        $PEAR suite --data "$DATA" --tasks "$TASKS" --seeds 0,1,2 --out "$SUITES/long_tune" "${RECIPE[@]}" \
            --tune-only --methods "${TUNE_METHODS:-adapter,pear,prune,peft-lora,peft-lora-eq}"
        keep_choices "$SUITES/long_tune" "$RESULTS/tuning" ;;  # each choice.json, and choices.md over all kept
    tuned)  # the claim at the scale --tune chose (the tune phase's folder, runs and choices), 3 seeds ($TASKS, $RATIOS)
        fam=",${FAMILY:-adapter,pear,prune},"
        tuned=""
        [[ $fam == *,adapter,* ]] && tuned=adapter
        for r in ${RATIOS:-0.75 0.9 0.5}; do
            for m in pear prune; do [[ $fam == *,$m,* ]] && tuned+="${tuned:+,}$m@prune_ratio=$r"; done
        done
        for m in peft-lora peft-lora-eq; do [[ $fam == *,$m,* ]] && tuned+="${tuned:+,}$m"; done
        $PEAR suite --data "$DATA" --tasks "$TASKS" --seeds 0,1,2 --out "$SUITES/long_tune" "${RECIPE[@]}" --tune \
            --methods "$tuned"
        keep_merged "$SUITES/long_tune" "$RESULTS/tuned"
        keep_choices "$SUITES/long_tune" "$RESULTS/tuning"
        tuned_claim ;;
    tuned_ablations)  # the ablations at the scale --tune chose for pear ($TASKS, $ABLATIONS), 3 seeds, in the tuned table
        abl=""
        for v in ${ABLATIONS:-knowledge=none knowledge=frozen knowledge=distill share=nearest share=top1 share=none \
                 importance=magnitude importance=random}; do abl+="${abl:+,}pear@prune_ratio=0.75@$v"; done
        $PEAR suite --data "$DATA" --tasks "$TASKS" --seeds 0,1,2 --out "$SUITES/long_tune" "${RECIPE[@]}" --tune \
            --methods "$abl"
        keep_merged "$SUITES/long_tune" "$RESULTS/tuned"
        tuned_claim ;;
    probe64)  # is s = 16 chosen because the grid stops there? adapter, pear and prune at s = 64, train800 -> val200,
        # seed 0 ($TASKS): the val200 score beside tuning/'s at 16 (a grid of one value: its "choice" is no decision)
        $PEAR suite --data "$DATA" --tasks "$TASKS" --seeds 0 --out "$SUITES/long_probe64" "${RECIPE[@]}" \
            --tune-only --tune-grid scale=64 --methods adapter,pear,prune
        keep_choices "$SUITES/long_probe64" "$RESULTS/probe_s64/tuning" ;;
    tune_ratio)  # pear's and prune's scale chosen apart at each of $RATIOS (--tune-each prune_ratio; default 0.75 0.9),
        # where the tune phase chose it at ratio 0.5 for every ratio: the tuning runs only, in long_tune_ratio
        $PEAR suite --data "$DATA" --tasks "$TASKS" --seeds 0,1,2 --out "$SUITES/long_tune_ratio" "${RECIPE[@]}" \
            --tune-only --tune-each prune_ratio --methods "$(AT= ratios_at ${RATIOS:-0.75 0.9})"
        keep_choices "$SUITES/long_tune_ratio" "$RESULTS/tuned_ratio/tuning" ;;
    tuned_ratio)  # the runs at tune_ratio's choices where they differ from the tune phase's ($TASKS, $METHODS, e.g.
        # METHODS=pear@prune_ratio=0.9), 3 seeds, in long_tune_ratio; tables in tuned_ratio/
        $PEAR suite --data "$DATA" --tasks "$TASKS" --seeds 0,1,2 --out "$SUITES/long_tune_ratio" "${RECIPE[@]}" \
            --tune --tune-each prune_ratio --methods "${METHODS:?tuned_ratio needs METHODS}"
        keep "$SUITES/long_tune_ratio" "$RESULTS/tuned_ratio" ;;
    reuse)  # tuned, without training again: where --tune chose s = 1 ($FAMILY on $TASKS; the tune phase first),
        # the s = 1 runs of the adequacy and curve phases are its runs (benchmarks/tuned_reuse.py)
        $PY benchmarks/tuned_reuse.py "$SUITES/long_tune" "$RESULTS/tuned" "$RESULTS/adequacy/results.csv" \
            "$RESULTS/results.csv" --tasks "$TASKS" --methods "${FAMILY:-adapter,pear}"
        tuned_claim ;;
    report)  # the headline: claim.md and claim.png from the adequacy and long tables kept here
        $PY benchmarks/claim_curve.py "$RESULTS/adequacy/results.csv" "$RESULTS/results.csv" --out "$RESULTS" \
            --docs docs/results.md ;;  # + headline.md (the README's table) and docs/results.md's claim tables
    *) echo "unknown phase $phase (epochs, adequacy, claim, precision, curve, baselines, ablations, gate, gate_test, tune, tuned, tuned_ablations, probe64, tune_ratio, tuned_ratio, reuse, report)" >&2; exit 2 ;;
    esac
done
