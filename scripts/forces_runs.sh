#!/bin/bash
# The measured runs of docs/forces.md, one after the other (about 90 minutes on 2 CPU
# cores). Run from the repository root; PYTHON=... picks the interpreter.
cd "$(dirname "$0")/.."
mkdir -p checkpoints/forces
P=${PYTHON:-python}
O=checkpoints/forces
S=--config.debug.seed=7
log() { echo "$(date +%T) $*" >> $O/queue.log; }
log start
$P scripts/scan.py --config configs/forces.py $S --bond_lengths 1.2,1.4,1.6 --cold --warm_iterations 0 --eval_iterations 2000 --out $O/h2_cold > $O/h2_cold.log 2>&1; log h2_cold $?
$P scripts/scan.py --config configs/forces.py $S --bond_lengths 1.0,1.2,1.4,1.6,1.8,2.0,2.2,2.4 --warm_iterations 500 --eval_iterations 2000 --out $O/h2_scan > $O/h2_scan.log 2>&1; log h2_scan $?
$P scripts/scan.py --config configs/forces.py $S --config.system.molecule=LiH --config.optim.iterations=4000 --bond_lengths 2.8,3.2 --warm_iterations 1000 --eval_iterations 2000 --out $O/lih > $O/lih.log 2>&1; log lih $?
$P scripts/relax.py --config configs/forces.py $S --bond_length 1.2 --warm_from $O/h2_cold/point_000/train --warm_iterations 300 --eval_iterations 1000 --out $O/h2_relax > $O/h2_relax.log 2>&1; log h2_relax $?
$P scripts/relax.py --config configs/forces.py $S --config.system.molecule=LiH --bond_length 2.8 --warm_from $O/lih/point_000/train --warm_iterations 500 --eval_iterations 1000 --out $O/lih_relax > $O/lih_relax.log 2>&1; log lih_relax $?
log done
