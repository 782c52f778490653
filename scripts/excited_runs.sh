#!/bin/bash
# The measured runs of docs/excited_states.md, one after the other (about 45 minutes on 2
# CPU cores). Run from the repository root; PYTHON=... picks the interpreter. Each system
# trains (configs/excited.py and flags), then evaluates the frozen states with dipoles.
# Finished runs end at once when the script runs again; logs are appended to.
cd "$(dirname "$0")/.."
O=checkpoints/excited
mkdir -p $O
P=${PYTHON:-python}
log() { echo "$(date +%T) $*" >> $O/queue.log; }
train_eval() {  # name, evaluation iterations, flags
  local name=$1 eval_iterations=$2; shift 2
  $P -m vmc --config configs/excited.py "$@" --config.log.save_path=$O/$name \
    >> $O/$name.log 2>&1; log $name $?
  $P -m vmc --config configs/excited.py "$@" --config.optim.optimizer=none \
    --config.optim.iterations=$eval_iterations --config.observables.dipole=True \
    --config.log.restore_path=$O/$name --config.log.save_path=$O/${name}_eval \
    >> $O/${name}_eval.log 2>&1; log ${name}_eval $?
}
log start
# He, three states (1^1S, 2^3S, 2^1S), three seeds.
for seed in 1 2 3; do
  train_eval he_s$seed 2000 --config.debug.seed=$seed
done
# H2 at 1.4011 bohr: four states (X, b, a, B); the reference is
# python scripts/excited_reference.py --molecule=H2 --basis=aug-cc-pvtz --roots=8
train_eval h2 2000 --config.debug.seed=1 --config.system.atom= --config.system.molecule=H2 \
  --config.system.states=4
# Li: 2^2S and one 2^2P component.
train_eval li 2000 --config.debug.seed=1 --config.system.atom=Li --config.system.states=2
# <S^2> of each state: short evaluations with the S^2 matrices.
for name in he_s1 li; do
  sys=$([ $name = li ] && echo "--config.system.atom=Li --config.system.states=2")
  $P -m vmc --config configs/excited.py --config.debug.seed=1 $sys --config.optim.optimizer=none \
    --config.optim.iterations=500 --config.observables.s2=True \
    --config.log.restore_path=$O/$name --config.log.save_path=$O/${name}_s2 \
    >> $O/${name}_s2.log 2>&1; log ${name}_s2 $?
done
# Full-CI references of H2 and Li (aug-cc-pVTZ; H2's aug-cc-pVQZ did not finish in 14
# CPU minutes).
for basis in aug-cc-pvtz; do
  [ -s $O/h2_fci_$basis.json ] || $P scripts/excited_reference.py --molecule=H2 \
    --basis=$basis --roots=5 --out=$O/h2_fci_$basis.json > $O/h2_fci_$basis.txt 2>&1
done
[ -s $O/li_fci.json ] || $P scripts/excited_reference.py --atom=Li --basis=aug-cc-pvtz \
  --roots=2 --out=$O/li_fci.json > $O/li_fci.txt 2>&1
# Cost of K states against the ground state: same network, batch and optimizer.
[ -s $O/cost.jsonl ] || $P scripts/benchmark.py --system He,Li --network small \
  --optimizer spring --laplacian forward --states 0,2,3 --rounds 3 --iterations 20 \
  --output $O/cost.jsonl
log done
