#!/bin/bash
# The measured runs of docs/pseudopotentials.md, one after the other (about an hour on 2
# CPU cores). Run from the repository root; PYTHON=... picks the interpreter. Finished
# runs are not repeated (a rerun of a complete run changes nothing).
cd "$(dirname "$0")/.."
O=checkpoints/ecp
mkdir -p $O
P=${PYTHON:-python}
S=--config.debug.seed=7
log() { echo "$(date +%T) $*" >> $O/queue.log; }
train_eval() {  # name, flags: 10000 training iterations, then a 5000-iteration evaluation
  local name=$1; shift
  $P -m vmc --config configs/ecp.py $S "$@" --config.optim.iterations=10000 \
    --config.log.save_path=$O/$name > $O/$name.log 2>&1; log $name $?
  $P -m vmc --config configs/ecp.py $S "$@" --config.optim.optimizer=none \
    --config.optim.iterations=5000 --config.log.restore_path=$O/$name \
    --config.log.save_path=$O/${name}_eval > $O/${name}_eval.log 2>&1; log ${name}_eval $?
}
log start
train_eval na --config.system.atom=Na
train_eval mg --config.system.atom=Mg
# S with and without ccECP, same network and batch: the first 1000 iterations of each.
for pp in True False; do
  $P -m vmc --config configs/ecp.py $S --config.system.atom=S --config.system.use_pp=$pp \
    --config.optim.iterations=1000 --config.log.save_path=$O/s_pp_$pp > $O/s_pp_$pp.log 2>&1
  log s_pp_$pp $?
done
# Seconds per iteration, interleaved rounds, in one sitting; then where the time goes.
if [ ! -s $O/benchmark.jsonl ]; then
  $P scripts/benchmark.py --system S,Ar --pp off,ccecp --network small,default \
    --laplacian forward --iterations 5 --rounds 2 --output $O/benchmark.jsonl \
    > $O/benchmark.log 2>&1; log benchmark $?
  $P scripts/benchmark.py --system S --pp off,ccecp --network small,default \
    --laplacian forward --iterations 3 --profile --output $O/profile.jsonl \
    > $O/profile.log 2>&1; log profile $?
fi
log done
