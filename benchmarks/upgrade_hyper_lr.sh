#!/bin/bash
# Which hyper-function learning rate lets an upgraded network's DY-ReLU layers develop dynamics (claim U1)?
# From a converged ReLU run of mobilenetv2_035 (SOURCE, a run folder of `dyrelu compare --claims C1-converged`),
# convert to DY-ReLU-B and fine-tune 2 epochs on 20 % of the training set (172 steps) at a constant lr 0.01, the
# hyper functions at SCALE× that rate: exactly (last FC at zero) at 10×, 100×, 1000×, and with the authors' init
# of the last FC (as nn.Linear, not exact) at 1× and 10×. Prints each run's last test accuracy (on a fifth of the
# test set) and the median/max slope range (static below 0.01) and writes them to OUT/summary.csv.
# usage: [DYRELU="python -m dyrelu"] benchmarks/upgrade_hyper_lr.sh SOURCE OUT [DATA_DIR]
set -eu
source=$1; out=$2; data_dir=${3:-/usr/share/datasets/fashion-mnist}
dyrelu=${DYRELU:-dyrelu}
mkdir -p "$out"
run() {  # name, init flag, scale
  nice -n 5 $dyrelu train --model mobilenetv2_035 --act dyrelu_b "$2" --init-from "$source" \
    --data fashion-mnist --data-dir "$data_dir" --data-fraction 0.2 --eval-fraction 0.2 --epochs 2 \
    --lr 0.01 --warmup-epochs 0 --min-lr 0.01 --label-smoothing 0.1 --hyper-lr-scale "$3" --no-hyper-weight-decay \
    --threads 1 --seed 0 --no-progress --out "$out/$1" > "$out/$1.log" 2>&1
}
for scale in 10 100 1000; do run "exact$scale" --zero-init-last $scale; done
for scale in 1 10; do run "authors$scale" --no-zero-init-last $scale; done
python3 - "$out" <<'PY'
import csv, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for name in ("exact10", "exact100", "exact1000", "authors1", "authors10"):
    last = list(csv.DictReader((out / name / "metrics.csv").open()))[-1]
    rows.append({"run": name, "test_acc": last["test_acc"], "dyn_median": f"{float(last['dyn_median']):.5f}",
                 "dyn_max": f"{float(last['dyn_max']):.5f}"})
with (out / "summary.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
for row in rows:
    print(f"{row['run']:<10} test {row['test_acc']:>6} %  slope range median {row['dyn_median']}  max {row['dyn_max']}")
PY
