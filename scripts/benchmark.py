"""Seconds per training iteration for fixed, named configurations; one JSON line per case.

  python scripts/benchmark.py --system N2 --network default --laplacian loop,forward \
      --batch_size 256 --iterations 10 --rounds 3 --output results.jsonl
  python scripts/benchmark.py --report results.jsonl     # Markdown tables, fitted exponents
  python scripts/benchmark.py --compare 43d9e35,. --system He,Li,N2 --network default \
      --laplacian forward --rounds 3 --output side_by_side.jsonl  # two checkouts, one sitting

Every case runs in its own subprocess (so compile caches and peak memory are its own), and
rounds go through all cases in turn, so slow drifts of the machine hit every case alike.
--compare times the same cases with several checkouts of vmc in the same run (git
revisions of this repository, materialized once under ~/.cache/vmc/benchmark/ (or
$VMC_BENCHMARK_CHECKOUTS), or
directories; '.' is this working tree as it is, uncommitted changes included): each case
runs with every checkout's own scripts/benchmark.py in turn within a round (the order
reversed every other round), and each line after the first checkout's carries its ratio
to the first, so a speed claim is a ratio of two things timed in one sitting.
Per case: the median and spread (min, max over rounds) of the per-round median seconds per
iteration, compile seconds (first iteration), peak memory (the highest over rounds, and the
lowest; host RSS on CPU, device peak on GPU), walker-steps per second (batch * mcmc.steps /
s) and the median variance of the local energy over the timed iterations. --pp off,ccecp
times each system all-electron and
with ccECP pseudopotentials (docs/pseudopotentials.md); --states 0,3 times the ground state
and three excited states (docs/excited_states.md). --profile also times the
Metropolis sampling, the local energy and the loss's value and gradient alone (and, with
--pp ccecp, the nonlocal ECP term alone): the split sampling / local energy / gradient
(the rest of value and gradient) / optimizer (the remainder of the iteration: for KFAC
its curvature estimate, solves and update).
Systems: atoms by symbol (He, Li, Be, C, N, O, Ne, ...) and molecules from
vmc.systems.MOLECULES (H2, LiH, N2, ...). Networks, read from their configs: `small` is
the quickstart FermiNet (vmc.config.get_config: 2 layers (32, 8), 4 determinants),
`default` the production one (vmc.config.default: 4 layers (256, 32), 16 determinants);
`psiformer_small` and `psiformer` are configs/psiformer/{small,default}.py's networks.
On GPU clusters run it on one node with the devices you want (CUDA_VISIBLE_DEVICES);
the batch is split over all local devices.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

PROFILE_KEYS = ('mcmc_s', 'local_energy_s', 'gradient_s', 'optimizer_s', 'nonlocal_s')
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
NETWORKS = {  # name -> where its `network` section comes from
    'small': 'vmc.config.get_config', 'default': 'vmc.config.default',
    'psiformer_small': 'psiformer/small.py', 'psiformer': 'psiformer/default.py',
}


def network_config(name: str):
  """The `network` section of the config behind a benchmark network name."""
  import importlib.util
  from vmc import config as config_lib
  source = NETWORKS[name]
  if source.startswith('vmc.config.'):
    return getattr(config_lib, source.rsplit('.', 1)[1])().network
  spec = importlib.util.spec_from_file_location('benchmark_config',
                                                os.path.join(CONFIGS, source))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config().network


def make_config(case: dict):
  from vmc import config as config_lib, systems
  cfg = config_lib.default()
  name = case['system']
  if name in systems.MOLECULES or name.lower() in (m.lower() for m in systems.MOLECULES):
    cfg.system.molecule = name
  else:
    cfg.system.atom = name
  cfg.network = network_config(case['network'])
  cfg.batch_size = case['batch_size']
  cfg.optim.optimizer = case['optimizer']
  cfg.optim.laplacian = case['laplacian']
  cfg.optim.local_energy_chunk_size = case['chunk']
  cfg.mcmc.steps = case['mcmc_steps']
  cfg.pretrain.method = 'none'
  cfg.system.use_pp = case.get('pp') == 'ccecp'
  cfg.system.states = case.get('states', 0)
  cfg.debug.seed = 7
  return cfg


def _timed(fn, *args) -> float:
  import jax
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def _peak_memory_gb() -> float:
  import jax
  device = jax.local_devices()[0]
  if device.platform != 'cpu':
    stats = device.memory_stats() or {}
    return stats.get('peak_bytes_in_use', 0) / 1e9
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def run_case(case: dict) -> dict:
  """One case in this process: compile, then time `iterations` full iterations."""
  import jax
  from vmc import config as config_lib, iteration, networks, parallel, runtime

  runtime.configure()  # the process settings of a run (vmc/runtime.py)
  spec = config_lib.resolve(make_config(case))
  model = iteration.build(spec)
  trainer = model.iteration
  state = iteration.init_state(spec, model, jax.random.PRNGKey(7))
  state = iteration.with_opt_state(state, model)
  state = trainer.burn_in(state, 5)  # walkers off their initial Gaussians
  start = time.perf_counter()
  state, stats = trainer.step(state)
  jax.block_until_ready((state, stats))
  compile_s = time.perf_counter() - start
  times, variances = [], []
  for _ in range(case['iterations']):
    start = time.perf_counter()
    state, stats = trainer.step(state)
    jax.block_until_ready((state, stats))
    times.append(time.perf_counter() - start)
    variances.append(float(parallel.first(stats.variance)))
  result = dict(
      system=case['system'] + (' (ccECP)' if spec.pp else '') + (
          f' (states={spec.states})' if spec.states else ''),
      hamiltonian=spec.system.hamiltonian, electrons=spec.system.n_electrons,
      batch=case['batch_size'], network=case['network'],
      params=networks.count_parameters(parallel.first(state.params)),
      laplacian=case['laplacian'], optimizer=case['optimizer'], chunk=case['chunk'],
      devices=jax.device_count(), platform=jax.devices()[0].platform,
      s_per_iter=statistics.median(times), compile_s=compile_s,
      energy=float(parallel.first(stats.energy)),
      variance=statistics.median(variances))
  if case['profile']:
    p_energy = parallel.pmap(model.objective.local_energy)
    p_mcmc = parallel.pmap(model.sampler.step)
    p_grad = parallel.pmap(jax.value_and_grad(model.objective.loss, has_aux=True))
    args = (state.params, state.mcmc, state.key, state.step)
    grad_args = (state.params, state.key, state.mcmc.x)
    for fn, a in ((p_mcmc, args), (p_energy, grad_args[::2]), (p_grad, grad_args)):
      _timed(fn, *a)  # compile
    t_mcmc, t_energy, t_grad = (statistics.median(_timed(fn, *a) for _ in range(3))
                                for fn, a in ((p_mcmc, args), (p_energy, grad_args[::2]),
                                              (p_grad, grad_args)))
    result.update(mcmc_s=t_mcmc, local_energy_s=t_energy, gradient_s=t_grad - t_energy,
                  optimizer_s=result['s_per_iter'] - t_mcmc - t_grad)
    if spec.pp:  # the nonlocal ECP term's share of the local energy
      from vmc import pseudopotential
      term = pseudopotential.nonlocal_term(model.network.evaluate, spec.system,
                                           spec.pp.quadrature)
      p_nonlocal = parallel.pmap(term)
      _timed(p_nonlocal, state.params, state.mcmc.x, state.key)
      result['nonlocal_s'] = statistics.median(
          _timed(p_nonlocal, state.params, state.mcmc.x, state.key) for _ in range(3))
  result['peak_memory_gb'] = _peak_memory_gb()
  return result


def resolve_checkout(name: str) -> tuple[str, str]:
  """(label, path of its scripts/benchmark.py) for '.', a directory or a git revision."""
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if name == '.':
    described = subprocess.run(['git', '-C', here, 'describe', '--always', '--dirty'],
                               capture_output=True, text=True).stdout.strip()
    return described or here, os.path.abspath(__file__)
  if os.path.isdir(name):
    return os.path.abspath(name), os.path.join(os.path.abspath(name), 'scripts', 'benchmark.py')
  sha = subprocess.run(['git', '-C', here, 'rev-parse', '--verify', '--quiet', name + '^{commit}'],
                       capture_output=True, text=True).stdout.strip()
  if not sha:
    raise ValueError(f'--compare {name}: neither a directory nor a git revision of {here}')
  cache = os.environ.get('VMC_BENCHMARK_CHECKOUTS', os.path.expanduser('~/.cache/vmc/benchmark'))
  path = os.path.join(cache, sha)
  if not os.path.isdir(path):  # extract the commit's tree once, then reuse it
    partial = path + '.partial'
    subprocess.run(['rm', '-rf', partial], check=True)
    os.makedirs(partial)
    archive = subprocess.run(['git', '-C', here, 'archive', sha], capture_output=True,
                             check=True).stdout
    subprocess.run(['tar', '-x', '-C', partial], input=archive, check=True)
    os.rename(partial, path)
  return sha[:7], os.path.join(path, 'scripts', 'benchmark.py')


def _seconds(x: float) -> float:
  """Four significant digits (a millisecond iteration keeps its precision)."""
  return float(f'{x:.4g}')


def summarize(case: dict, results: list[dict]) -> dict:
  """One JSON line from a case's rounds: medians, spread over rounds, peak memory."""
  per_round = [r['s_per_iter'] for r in results]
  out = dict(results[0])
  out.update(
      s_per_iter=_seconds(statistics.median(per_round)),
      s_per_iter_min=_seconds(min(per_round)), s_per_iter_max=_seconds(max(per_round)),
      rounds=len(results), iterations=case['iterations'],
      compile_s=round(statistics.median(r['compile_s'] for r in results), 2),
      peak_memory_gb=round(max(r['peak_memory_gb'] for r in results), 3),
      peak_memory_gb_min=round(min(r['peak_memory_gb'] for r in results), 3),
      walker_steps_per_s=round(
          case['batch_size'] * case['mcmc_steps'] / statistics.median(per_round), 1))
  for key in PROFILE_KEYS:
    if key in out:
      out[key] = _seconds(statistics.median(r[key] for r in results))
  out['energy'] = round(out['energy'], 5)
  if 'variance' in out:  # (checkouts older than the variance column lack it)
    out['variance'] = round(statistics.median(r['variance'] for r in results), 5)
  return out


def _peak(row: dict) -> str:
  """Peak GB: the highest over rounds, with the lowest when rounds differed."""
  low = row.get('peak_memory_gb_min', row['peak_memory_gb'])
  if low == row['peak_memory_gb']:
    return f'{row["peak_memory_gb"]:.3f}'
  return f'{row["peak_memory_gb"]:.3f} ({low:.3f}–{row["peak_memory_gb"]:.3f})'


def compare_report(rows: list[dict]) -> str:
  """Markdown: one line per case, each checkout's s/iter and peak memory side by side,
  and every later checkout's ratio to the first (median over rounds, then the range of
  the per-round ratios)."""
  labels = list(dict.fromkeys(r['checkout'] for r in rows))
  cases = {}
  for r in rows:
    key = (r['system'], r['network'], r['batch'], r.get('optimizer', 'kfac'), r['laplacian'])
    cases.setdefault(key, {})[r['checkout']] = r
  head = ['system', 'network', 'batch', 'optimizer', 'laplacian']
  head += [f'{c} s/iter' for c in labels] + [f'{c} / {labels[0]}' for c in labels[1:]]
  head += [f'{c} peak GB (range over rounds)' for c in labels]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for key, by in cases.items():
    cells = [str(k) for k in key]
    for c in labels:
      r = by.get(c)
      cells.append(f'{r["s_per_iter"]:.4g} ({r["s_per_iter_min"]:.4g}–{r["s_per_iter_max"]:.4g})'
                   if r else '')
    for c in labels[1:]:
      r = by.get(c)
      cells.append(f'**{r["ratio"]:.3f}** ({r["ratio_min"]:.3f}–{r["ratio_max"]:.3f})'
                   if r and 'ratio' in r else '')
    cells += [_peak(by[c]) if c in by else '' for c in labels]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def report(rows: list[dict]) -> str:
  """Markdown: one line per (system, network, batch, optimizer), the Laplacian methods side
  by side with their spread,
  speed-up over `loop`, peak memory; then, for series of distinct electron counts (e.g.
  He, Be, C, O, Ne), least-squares fits of log(s/iter) against log(electrons)."""
  groups = {}
  for r in rows:
    key = (r['system'], r['network'], r['batch'], r.get('optimizer', 'kfac'))
    groups.setdefault(key, {})[r['laplacian']] = r
  methods = [m for m in ('loop', 'forward', 'folx') if any(m in g for g in groups.values())]
  head = ['system', 'electrons', 'network', 'params', 'batch', 'optimizer']
  faster = [m for m in methods if m != 'loop'] if 'loop' in methods else []
  head += [f'{m} s/iter' for m in methods] + [f'{m} speed-up' for m in faster]
  head += [f'{m} peak GB' for m in methods]
  profiled = any('optimizer_s' in r for r in rows)
  if profiled:  # --profile: where the seconds of an iteration go
    head += ['sampling / local energy / gradient / optimizer s']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for (system, network, batch, optimizer), g in groups.items():
    any_row = next(iter(g.values()))
    cells = [system, str(any_row['electrons']), network, f'{any_row["params"]:,}', str(batch),
             optimizer]
    for m in methods:
      r = g.get(m)
      cells.append(f'{r["s_per_iter"]:.4g} ({r["s_per_iter_min"]:.4g}–{r["s_per_iter_max"]:.4g})'
                   if r else '')
    for m in faster:
      ok = m in g and 'loop' in g
      cells.append(f'{g["loop"]["s_per_iter"] / g[m]["s_per_iter"]:.2f}x' if ok else '')
    cells += [f'{g[m]["peak_memory_gb"]:.2f}' if m in g else '' for m in methods]
    if profiled:
      cells += ['; '.join(f'{m}: {r["mcmc_s"]:.3g} / {r["local_energy_s"]:.3g} / '
                          f'{r.get("gradient_s", float("nan")):.3g} / {r["optimizer_s"]:.3g}'
                          for m, r in g.items() if 'optimizer_s' in r)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  by_series = {}
  for r in rows:
    by_series.setdefault((r['network'], r['laplacian']), []).append(r)
  fits = []
  for (network, method), series in by_series.items():
    electrons = [r['electrons'] for r in series]
    if len(set(electrons)) >= 3 and len(set(electrons)) == len(electrons):  # a size series
      n = np.log([r['electrons'] for r in series])
      t = np.log([r['s_per_iter'] for r in series])
      fits.append(f'- {network}, {method}: s/iter ∝ N^{np.polyfit(n, t, 1)[0]:.2f} over '
                  f'N = {", ".join(str(r["electrons"]) for r in series)} electrons')
  return '\n'.join(lines + ([''] + fits if fits else []))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--system', default='He,Li,LiH,Be,N2')
  parser.add_argument('--network', default='small,default')
  parser.add_argument('--laplacian', default='loop,forward')
  parser.add_argument('--optimizer', default='kfac', help='comma-separated, e.g. kfac,spring')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--iterations', type=int, default=10, help='timed, after compiling')
  parser.add_argument('--rounds', type=int, default=1, help='repeats of every case')
  parser.add_argument('--mcmc_steps', type=int, default=10)
  parser.add_argument('--chunk', type=int, default=0,
                      help='optim.local_energy_chunk_size (0: each checkout\'s default)')
  parser.add_argument('--states', default='0', help='comma-separated system.states, e.g. '
                      '0,3: the ground state alone and three excited states')
  parser.add_argument('--pp', default='off', help="'off', 'ccecp' or both ('off,ccecp'): "
                      'all-electron, or with ccECP pseudopotentials on the atoms beyond He')
  parser.add_argument('--profile', action='store_true',
                      help='also time MCMC and the local energy alone')
  parser.add_argument('--compare', default='.', help='comma-separated checkouts timed side '
                      "by side: git revisions (e.g. 43d9e35,.), directories; '.' is this "
                      'working tree; lines after the first checkout carry ratios to it')
  parser.add_argument('--output', help='also append the JSON lines to this file')
  parser.add_argument('--report', help='print Markdown tables of these JSON-lines files '
                      '(comma-separated) instead of running anything')
  parser.add_argument('--case', help=argparse.SUPPRESS)  # internal: run one case here
  args = parser.parse_args(argv)

  if args.case:
    if argv is None:  # a case process of its own, started by the loop below
      from vmc import runtime  # noqa: PLC0415
      runtime.reexec_with_huge_pages()  # as the vmc command does
    print(json.dumps(run_case(json.loads(args.case))), flush=True)
    return 0
  if args.report:
    rows = [json.loads(line) for path in args.report.split(',') for line in open(path)
            if line.strip()]
    several = len({r.get('checkout') for r in rows}) > 1
    print(compare_report(rows) if several else report(rows))
    return 0

  unknown = [n for n in args.network.split(',') if n not in NETWORKS]
  if unknown:
    parser.error(f'--network {",".join(unknown)}: unknown; use some of {", ".join(NETWORKS)}')
  if not set(args.pp.split(',')) <= {'off', 'ccecp'}:
    parser.error(f"--pp {args.pp}: use 'off', 'ccecp' or 'off,ccecp'")
  cases = [dict(system=s, network=n, laplacian=l, optimizer=o,
                batch_size=args.batch_size, iterations=args.iterations,
                mcmc_steps=args.mcmc_steps, chunk=args.chunk, profile=args.profile, pp=pp,
                **({'states': int(k)} if int(k) else {}))
           for s in args.system.split(',') for pp in args.pp.split(',')
           for k in args.states.split(',')
           for n in args.network.split(',')
           for o in args.optimizer.split(',') for l in args.laplacian.split(',')]
  try:
    checkouts = [resolve_checkout(c) for c in args.compare.split(',')]
  except (ValueError, subprocess.CalledProcessError) as e:
    parser.error(str(e))
  runs = {(i, label): [] for i in range(len(cases)) for label, _ in checkouts}
  for round_ in range(args.rounds):
    for i, case in enumerate(cases):
      for label, script in checkouts[::-1] if round_ % 2 else checkouts:
        proc = subprocess.run([sys.executable, script, '--case', json.dumps(case)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
          tail = proc.stderr.strip().splitlines()[-1:] or ['no output']
          print(f'benchmark case {case["system"]}/{case["network"]}/{case["laplacian"]} '
                f'({label}) failed: {tail[0]}', file=sys.stderr)
          return 1
        runs[i, label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
  for i, case in enumerate(cases):
    base = runs[i, checkouts[0][0]]
    for label, _ in checkouts:
      out = summarize(case, runs[i, label])
      if len(checkouts) > 1:
        out['checkout'] = label
      if label != checkouts[0][0]:
        paired = [r['s_per_iter'] / b['s_per_iter']
                  for r, b in zip(runs[i, label], base, strict=True)]
        out.update(ratio=round(out['s_per_iter'] / summarize(case, base)['s_per_iter'], 4),
                   ratio_min=round(min(paired), 4), ratio_max=round(max(paired), 4),
                   ratio_to=checkouts[0][0])
      line = json.dumps(out)
      print(line, flush=True)
      if args.output:
        with open(args.output, 'a') as f:
          f.write(line + '\n')
  return 0

if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.exit(main())
