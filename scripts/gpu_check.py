"""GPU readiness in one prepared run: device detection, a correctness run, benchmarks.

  python scripts/gpu_check.py --out gpu_check            # on one GPU, under 8 minutes
  python scripts/gpu_check.py --out dry --allow_cpu --he_iterations 20 --batch_size 64 \
      --bench_batch_size 16 --bench_systems He --bench_iterations 2 --network small  # CPU

Three steps, each writing into --out, and a table on stdout at the end:
1. device.json: JAX's version and backend, the devices (kind, memory), whether KFAC can run
   here (vmc/optimizers/kfac_support.py), and vmc's run settings (vmc/runtime.py). Without
   an accelerator it stops (exit 1) unless --allow_cpu.
2. he/: the helium atom, the quickstart network, --he_iterations iterations at
   --batch_size walkers with --optimizer ('auto': KFAC where kfac-jax runs on this JAX,
   else SPRING), as the `vmc` command runs it; passes if the energy of the last 20% of
   iterations is within --tolerance_mha of the exact -2.903724 Ha.
3. bench.jsonl: scripts/benchmark.py for --bench_systems (He, Li, N2 and CO2, 22
   electrons) with the --network network at --bench_batch_size walkers: seconds per
   iteration, compile seconds, peak device memory.
gpu_check.json gathers all three. Exit status 0 only if every step passed.

On a machine where only jax, jaxlib, flax, optax, chex, h5py and absl-py are installed
(as on GPU images), the rest travels as wheels: scripts/gpu_wheels.sh downloads them here
into .whl/, and on the GPU machine

  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  PYTHONPATH=/tmp/site:$PWD python3 scripts/gpu_check.py --out $OUT

runs this from the repository root without installing vmc (docs/benchmarks.md, "GPU").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HE_EXACT = -2.903724377  # Ha; vmc/data/energies.csv (Pekeris-type variational limit)


def detect(allow_cpu: bool) -> dict:
  # This process only looks at the device: it must not hold 75% of the GPU's memory (JAX's
  # default) while the runs it starts are measured.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  import jax
  from vmc import runtime
  from vmc.optimizers import kfac_support
  devices = jax.devices()
  stats = devices[0].memory_stats() or {}
  info = dict(
      jax=jax.__version__, backend=jax.default_backend(), count=len(devices),
      kind=devices[0].device_kind, memory_gb=round(stats.get('bytes_limit', 0) / 1e9, 1),
      kfac_problem=kfac_support.problem(), runtime=runtime.configure(),
      passed=allow_cpu or jax.default_backend() != 'cpu')
  return info


def _vmc(args: list[str], log: str) -> int:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
  with open(log, 'w') as f:
    return subprocess.run([sys.executable, '-m', 'vmc', *args], stdout=f,
                          stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                          timeout=600).returncode


def helium(out: str, optimizer: str, args: argparse.Namespace) -> dict:
  run = os.path.join(out, 'he')
  start = time.perf_counter()
  code = _vmc([f'--config.optim.optimizer={optimizer}',
               f'--config.optim.iterations={args.he_iterations}',
               f'--config.batch_size={args.batch_size}', f'--config.log.save_path={run}',
               f'--config.debug.seed={args.seed}'], os.path.join(out, 'he.log'))
  result = dict(optimizer=optimizer, iterations=args.he_iterations, batch=args.batch_size,
                exit_code=code, wall_s=round(time.perf_counter() - start, 1))
  try:
    with open(os.path.join(run, 'summary.json')) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return dict(result, passed=False)
  error = 1000 * (summary['energy'] - HE_EXACT)
  return dict(result, energy=summary['energy'], energy_error=summary['energy_error'],
              error_mha=round(error, 3), passed=code == 0 and abs(error) <= args.tolerance_mha)


def benchmark(out: str, optimizer: str, args: argparse.Namespace) -> dict:
  path = os.path.join(out, 'bench.jsonl')
  if os.path.exists(path):
    os.remove(path)
  command = [sys.executable, os.path.join(ROOT, 'scripts', 'benchmark.py'),
             '--system', args.bench_systems, '--network', args.network,
             '--laplacian', 'forward', '--optimizer', optimizer,
             '--batch_size', str(args.bench_batch_size),
             '--iterations', str(args.bench_iterations), '--output', path]
  start = time.perf_counter()
  with open(os.path.join(out, 'bench.log'), 'w') as f:
    code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                          timeout=900).returncode
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  return dict(exit_code=code, wall_s=round(time.perf_counter() - start, 1), rows=rows,
              passed=code == 0 and len(rows) == len(args.bench_systems.split(',')))


def table(result: dict) -> str:
  d, he = result['device'], result.get('helium', {})
  lines = [f"device: {d['count']} x {d['kind']} ({d['backend']}, {d['memory_gb']} GB), "
           f"jax {d['jax']}; KFAC: {d['kfac_problem'] or 'runs'}",
           f"helium ({he.get('optimizer')}, {he.get('iterations')} iterations, batch "
           f"{he.get('batch')}): {he.get('energy')} +- {he.get('energy_error')} Ha, error "
           f"{he.get('error_mha')} mHa, {he.get('wall_s')} s: "
           f"{'passed' if he.get('passed') else 'FAILED'}",
           '', '| system | electrons | batch | s/iter | compile s | peak GB |',
           '|---|---|---|---|---|---|']
  for r in result.get('benchmark', {}).get('rows', []):
    lines.append(f"| {r['system']} | {r['electrons']} | {r['batch']} | {r['s_per_iter']:.4g} "
                 f"| {r['compile_s']:.1f} | {r['peak_memory_gb']:.2f} |")
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='folder for the results (created)')
  parser.add_argument('--allow_cpu', action='store_true', help='run without an accelerator')
  parser.add_argument('--optimizer', default='auto', help="'auto', kfac, spring, ...")
  parser.add_argument('--he_iterations', type=int, default=500)
  parser.add_argument('--batch_size', type=int, default=4096, help='walkers of the He run')
  parser.add_argument('--tolerance_mha', type=float, default=2.0)
  parser.add_argument('--seed', type=int, default=7)
  parser.add_argument('--bench_systems', default='He,Li,N2,CO2')
  parser.add_argument('--bench_batch_size', type=int, default=4096)
  parser.add_argument('--bench_iterations', type=int, default=5)
  parser.add_argument('--network', default='default', help="benchmark.py's --network")
  args = parser.parse_args(argv)
  try:
    os.makedirs(args.out, exist_ok=True)
  except OSError as e:  # a file of that name, a read-only parent, ...
    print(f'gpu_check: error: --out {args.out}: {e.strerror or e}; name a folder to create '
          'or an existing folder', file=sys.stderr)
    return 2
  sys.path.insert(0, ROOT)

  try:
    result: dict = {'device': detect(args.allow_cpu)}
  except Exception as e:  # noqa: BLE001  (a backend that cannot start: any error of JAX's)
    why = f'{type(e).__name__}: {str(e)[:200]}' if str(e).strip() else type(e).__name__
    print(f'gpu_check: error: JAX could not start its backend ({why}); check JAX_PLATFORMS '
          'and the CUDA plugin (docs/install.md)', file=sys.stderr)
    return 1
  if not result['device']['passed']:
    print('gpu_check: error: JAX found no accelerator (backend cpu); install jax with its '
          'CUDA plugin, or pass --allow_cpu for a dry run', file=sys.stderr)
    return 1
  optimizer = args.optimizer
  if optimizer == 'auto':
    optimizer = 'kfac' if result['device']['kfac_problem'] is None else 'spring'
  result['helium'] = helium(args.out, optimizer, args)
  result['benchmark'] = benchmark(args.out, optimizer, args)
  result['passed'] = all(result[k]['passed'] for k in ('device', 'helium', 'benchmark'))
  with open(os.path.join(args.out, 'gpu_check.json'), 'w') as f:
    json.dump(result, f, indent=2)
  print(table(result), flush=True)
  return 0 if result['passed'] else 1


if __name__ == '__main__':
  sys.exit(main())
