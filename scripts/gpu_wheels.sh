#!/usr/bin/env bash
# Wheels for scripts/gpu_check.py on a GPU machine whose image has jax (with its CUDA
# plugin), jaxlib, flax, optax, chex, h5py, absl-py, scipy, numpy, PyYAML and threadpoolctl
# but not the rest of what vmc needs: CPython 3.12, x86-64 Linux, the versions of
# constraints-py312.txt, into .whl/ (or the folder given). Run it here (where pip reaches
# the package index), carry the folder to the GPU machine, and there
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD python3 scripts/gpu_check.py --out $OUT
# Extra wheels (e.g. a kfac-jax built from its development branch, for KFAC on jax >= 0.11)
# can be put into the same folder.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
mkdir -p "$dest"
for name in kfac-jax pyscf folx jaxtyping wadler_lindig ml_collections distrax tfp-nightly \
            dm-tree immutabledict decorator gast cloudpickle six; do
  pin=$(grep -iE "^${name//[-_]/[-_]}==" constraints-py312.txt) || {
    echo "gpu_wheels: $name is not in constraints-py312.txt" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" "$pin"
done
ls "$dest"
