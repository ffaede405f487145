#!/bin/bash
# The training check of issue 18: a tiny `dyrelu train` of DY-ReLU-B, DY-ReLU-C and the block-context B
# (mobilenetv2_035, 512 synthetic images, 2 epochs, seed 0, 1 thread) with the package at SRC, into
# OUTPREFIX_<act>/metrics.csv; run once on the code before a change and once after, then compare the CSVs.
# usage: [PYTHON=.venv/bin/python] benchmarks/train_check.sh SRC OUTPREFIX
src=$1; out=$2
for act in dyrelu_b dyrelu_c; do
  PYTHONPATH=$src nice -n 5 ${PYTHON:-python} -m dyrelu train --model mobilenetv2_035 --act $act --data synthetic --synthetic-samples 512 --epochs 2 --batch-size 64 --threads 1 --seed 0 --lr 0.02 --no-progress --out ${out}_$act > ${out}_$act.log 2>&1
done
PYTHONPATH=$src nice -n 5 ${PYTHON:-python} -m dyrelu train --model mobilenetv2_035 --act dyrelu_b --act-context block --data synthetic --synthetic-samples 512 --epochs 2 --batch-size 64 --threads 1 --seed 0 --lr 0.02 --no-progress --out ${out}_block > ${out}_block.log 2>&1
echo done
