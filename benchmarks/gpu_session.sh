#!/usr/bin/env bash
# The GPU checks, as one prepared script for a short lease on one GPU (run from the repo root):
#
#   OUT=gpu_out bash benchmarks/gpu_session.sh [phases]      # phases: default "env target eager smoke"
#
# env     nvidia-smi and the versions the code runs under
# target  ViT-B/16, 224 px, batch 128, bf16, frozen backbone held in bf16, torch.compile:
#         adapter, pear (after pruning) and the input-grad ceiling in one process, with the
#         Taylor tracker's A/B
# eager   every method, eager, bf16 autocast (fp32 weights): the eager reference setting
# smoke   `pear train --compile` end to end on CUDA (tiny ViT, sprites_loc built on the spot), then
#         `pear eval --run` must give back the same test accuracy
# compile linear, full, adapter, pear and lora compiled, bf16 autocast with fp32 weights (the
#         issue's compiled reference setting)
#
# Each phase is its own process under its own time limit, writing under $OUT, so a slow
# compile costs that phase and not the others. Uses `python3` (or $PYTHON) as found;
# pear runs from src/ without installing.
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
PHASES=${*:-env target eager smoke}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/session.log"
say() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
phase() {  # phase NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    say "$name: start (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    say "$name: exit ${PIPESTATUS[0]} after $((SECONDS - t0))s"
}
# A dry run elsewhere swaps these, e.g. BENCH='--backbone vit_tiny_patch16_224 --img-size 32 --batch-size 4 --device cpu'
TP="benchmarks/throughput.py ${BENCH:---backbone vit_base_patch16_224 --img-size 224 --batch-size 128 --device cuda}"
DEVICE=${DEVICE:-cuda}

for p in $PHASES; do
    case $p in
    env)
        phase env 60 bash -c "nvidia-smi; $PY -c 'import sys, torch, timm, safetensors, peft, pear; \
print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name()); \
print(\"timm\", timm.__version__, \"peft\", peft.__version__, \"safetensors\", safetensors.__version__)'" ;;
    target)
        phase target 200 $PY $TP --bf16 --frozen-bf16 --compile --tracker --methods adapter,pear,input-grad \
            --steps 60 --rounds 3 --out "$OUT/vitb224_b128_compile_bf16w.json" ;;
    eager)
        phase eager 100 $PY $TP --bf16 --steps 30 --rounds 3 --out "$OUT/vitb224_b128_eager.json" ;;
    smoke)
        phase smoke 150 bash -c "set -e; D=\$(mktemp -d); $PY -m pear data build sprites_loc --out \$D/data; \
$PY -m pear train --data \$D/data --task sprites_loc --out \$D/run --backbone vit_tiny_patch16_224 --img-size 64 \
  --model-kwargs '{\"depth\": 4}' --method pear --epochs 3 --warmup-epochs 1 --batch-size 64 --device $DEVICE --compile --no-progress; \
$PY -m pear eval --run \$D/run; $PY -m pear inspect \$D/run | tail -n 8; cat \$D/run/metrics.json; echo" ;;
    compile)
        phase compile 280 $PY $TP --bf16 --compile --methods linear,full,adapter,pear,lora \
            --steps 30 --rounds 3 --out "$OUT/vitb224_b128_compile.json" ;;
    *) say "unknown phase $p (expected env, target, eager, smoke, compile)"; exit 2 ;;
    esac
done
say "done"
