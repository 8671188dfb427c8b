#!/bin/bash
. /work/venv/bin/activate
export PYTHONPATH=/work/main
cd /work/main
while [ ! -f /work/study/runs/relative_both_de_seed0/summary.json ]; do sleep 20; done
mkdir -p /work/study/matrix
nice -n 5 python -m jaxalign.cli eval matrix /work/study/runs/paper_de_seed0 /work/study/runs/relative_both_de_seed0 \
   --dtype float32 --bootstrap 200 --out /work/study/matrix > /work/study/matrix/matrix.md
echo "matrix done $(date)"
