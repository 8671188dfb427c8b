#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md in one go (one H100/H200 or similar, CUDA jax and torch).
#
#   bash benchmarks/gpu_suite.sh OUT_DIR [PART]
#
# PART 1 (default: both) is the first set below, PART 2 the 8B scorer modes and DE generation
# timings (run separately here because one device session could not hold both).
# Steps, most important first, each bounded by `timeout` so that one slow step cannot take the
# others down: Llama-3-8B-shape scoring throughput (default and item-first layouts, the PyTorch
# loop on the same GPU), DE generations on the 8B shape, the 100M preset's throughput for every
# layout and scorer mode, DE cost against P (100M) and K (tiny, 100 generations), and the model
# parity tests run with JAX on the GPU (TF32 check). Figures go to OUT_DIR/*.json (the
# parity tests' report to parity_gpu.txt), logs to OUT_DIR/log.txt.
#
# GPU_SUITE_SMALL=1 runs every step with tiny shapes (the tiny preset, P = 4, one repeat, two
# generations, no PyTorch loop, no parity tests) so the script itself can be checked on a CPU
# (tests/test_gpu_suite.py) and is known to run before device time is spent on it.
set -u
out=${1:?usage: bash benchmarks/gpu_suite.sh OUT_DIR [PART]}
if [ "${GPU_SUITE_SMALL:-0}" = 1 ]; then
  B8=tiny; B100=tiny; P32=4; PS=4,8; GEN10=2; GEN20=2; GEN100=2; TORCH=--no-torch; REP=1; SKIP_PARITY=1
else
  B8=llama3-8b; B100=100m; P32=32; PS=16,32,64; GEN10=10; GEN20=20; GEN100=100; TORCH=--torch; REP=3; SKIP_PARITY=0
fi
part=${2:-all}
mkdir -p "$out"
log="$out/log.txt"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

step() {  # step FILE SECONDS COMMAND...: stdout to OUT_DIR/FILE, stderr to the log
  local name=$1 seconds=$2
  shift 2
  echo "=== $name ($(date -u +%FT%TZ)): $*" >>"$log"
  local start=$SECONDS
  timeout "$seconds" "$@" >"$out/$name" 2>>"$log"
  echo "=== $name: exit $? after $((SECONDS - start)) s" >>"$log"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import jax, torch, transformers; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, torch.cuda.is_available(), '| transformers', transformers.__version__)"
} >>"$log" 2>&1

if [ "$part" = all ] || [ "$part" = 1 ]; then
step throughput_8b.json 260 python3 benchmarks/throughput.py --preset $B8 -P $P32 -K 10 \
  --layout user_start,user_end --mode cached $TORCH --warmup 1 --repeats $REP --json
step de_8b.json 150 python3 benchmarks/de_cost.py --preset $B8 --populations $P32 --ks 10 \
  --generations $GEN10 --json
step throughput_100m.json 120 python3 benchmarks/throughput.py --preset $B100 -P 16 -K 10 \
  --layout user_start,after_item,user_end --mode cached,full --warmup 1 --repeats $REP --json
[ "$SKIP_PARITY" = 1 ] || step parity_gpu.txt 90 python3 -m pytest -q -x -p no:cacheprovider tests/test_model_parity.py
step de_100m_P.json 100 python3 benchmarks/de_cost.py --preset $B100 --populations $PS --ks 10 \
  --generations $GEN20 --json
step de_tiny_K_100gen.json 80 python3 benchmarks/de_cost.py --preset tiny --populations $P32 \
  --ks 5,10,20 --generations $GEN100 --json
fi
if [ "$part" = all ] || [ "$part" = 2 ]; then
step throughput_8b_modes.json 130 python3 benchmarks/throughput.py --preset $B8 -P $P32 -K 10 \
  --layout user_start,after_item --mode cached,full --no-torch --warmup 1 --repeats $REP --json
step de_8b_user_start.json 110 python3 benchmarks/de_cost.py --preset $B8 --populations $P32 \
  --ks 10 --generations $GEN20 --json
step de_8b_user_end.json 60 python3 benchmarks/de_cost.py --preset $B8 --populations $P32 \
  --ks 10 --generations $GEN20 --layout user_end --json
fi
echo "=== done $(date -u +%FT%TZ)" >>"$log"
