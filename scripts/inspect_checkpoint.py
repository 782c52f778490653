"""What a checkpoint holds, and the wavefunction evaluated on its own walkers.

  python scripts/inspect_checkpoint.py CKPT_OR_RUN_DIR [--walkers 256]

Prints the format, step, vmc version and system of the checkpoint, the network's
parameter count with every parameter's shape, the optimizer state size and the walkers;
then evaluates log|psi| and the local energy (exact Laplacian) on up to `--walkers` of the
stored walkers and prints their statistics. Needs no config: the checkpoint carries its
own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile

import numpy as np

from vmc import checkpoint, config as config_lib, statistics


def _header(path: str) -> dict:
  with np.load(path, allow_pickle=False) as data:
    return json.loads(str(data['header']))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('path', metavar='CKPT_OR_RUN_DIR')
  parser.add_argument('--walkers', type=int, default=256,
                      help='walkers to evaluate (0: none; default 256)')
  args = parser.parse_args(argv)
  path = args.path
  if os.path.isdir(path):
    found = checkpoint.list_checkpoints(path)
    if not found:
      print(f'inspect_checkpoint.py: error: {path} holds no ckpt_*.npz', file=sys.stderr)
      return 2
    path = found[-1][1]
  try:
    header = _header(path)
    cfg = config_lib.from_json(header['config'])
  except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
    print(f'inspect_checkpoint.py: error: {path} is not a readable vmc checkpoint '
          f'({type(e).__name__}: {e})', file=sys.stderr)
    return 2

  import jax  # noqa: PLC0415  (after argument checks: importing JAX takes seconds)
  from vmc import iteration, networks  # noqa: PLC0415
  spec = config_lib.resolve(cfg)
  system = spec.system
  print(f'checkpoint  {path}')
  print(f'format      {header["format"]}, vmc {header["version"]}, step {header["step"]}')
  print(f'system      {system.name}: electrons (up, down) {system.electrons}, charge '
        f'{system.charge}, atoms ' + ', '.join(
            f'{a.symbol} {tuple(round(c, 4) for c in a.coords)}' for a in system.atoms))
  net = spec.network
  if net.network_type == 'psiformer':
    p = net.psiformer
    shape = (f'{p.num_layers} layers of {p.num_heads} heads x {p.heads_dim}, MLP '
             f'{tuple(p.mlp_hidden_dims)}, layer norm {p.use_layer_norm}')
  else:
    shape = f'hidden {tuple(map(tuple, net.ferminet.hidden_dims))}'
  print(f'network     {net.network_type}, {shape}, {net.determinants} determinants, '
        f'full_det={net.full_det}, envelope {net.envelope_type}'
        f'{" (shared)" if net.envelope_shared else ""}, Jastrow {net.jastrow}')
  print(f'optimizer   {spec.optim.optimizer}; batch_size {spec.batch_size}')

  model = iteration.build(spec)
  state = iteration.init_state(spec, model, jax.random.PRNGKey(0))
  template = iteration.with_opt_state(state, model)
  _, fields = checkpoint.load(path, checkpoint.state_fields(template, gather=False),
                              checkpoint.RESIZABLE)
  params = fields['params']
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  print(f'parameters  {networks.count_parameters(params)} in {len(leaves)} arrays')
  for key, leaf in leaves:
    print(f'  {jax.tree_util.keystr(key):60s} {tuple(np.shape(leaf))}')
  opt_size = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(fields['opt_state']))
  print(f'optimizer state  {opt_size} numbers')
  x = np.asarray(fields['walkers'])
  print(f'walkers     {x.shape[0]} x {x.shape[1] // 3} electrons; move width '
        f'{float(fields["width"]):.4f} bohr; {len(fields["key"])} RNG streams')

  if args.walkers > 0:
    x = x[:args.walkers]
    logabs = np.asarray(jax.jit(model.objective.logabs)(params, x))
    e_l = np.asarray(jax.jit(model.objective.local_energy)(params, x))
    est = statistics.estimate(e_l)  # walkers are independent: the naive error applies
    finite = np.isfinite(e_l)
    print(f'log|psi|    mean {np.mean(logabs):.4f}, min {np.min(logabs):.4f}, '
          f'max {np.max(logabs):.4f} over {len(x)} walkers')
    print(f'local energy  mean {est.mean:.6f} +- {est.naive_error:.6f} Ha, variance '
          f'{np.var(e_l[finite]):.6f} Ha^2, median {np.median(e_l[finite]):.6f}, '
          f'non-finite {int(np.sum(~finite))}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
