"""Summaries, a comparison table and a convergence plot of vmc runs (finished or running).

  python scripts/analyze.py RUN_DIR [RUN_DIR ...] [--window 0.2] [--plot analysis.png]

For each run: system, mode (training or evaluation), iterations, energy with a reblocked
error over the last `--window` of training (all of an evaluation), variance of the local
energy, acceptance, wall time, and, for systems in vmc's reference table, the error
against the exact/reference energy of its Hamiltonian (all-electron, or the ccECP table for
pseudopotential runs, named next to the system) and the percentage of the correlation energy
(E_HF_limit - E) / (E_HF_limit - E_exact) recovered. The plot (matplotlib) has the energy
(moving mean) against iteration with the reference line, the distance to the reference on
a log scale, and the variance of the local energy.

Excited-state runs (system.states) also get their table of states (energies, excitation
energies, oscillator strengths, jackknife errors; vmc.states) and, with --levels PNG, a
level diagram: each state's energy with its error bar beside the exact levels vmc ships
(vmc/data/excited_states.csv).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from vmc import analysis, writers
from vmc.errors import ConfigError


def summarize_run(run_dir: str, window: float | None) -> tuple[dict, dict]:
  summary = analysis.summarize_run(run_dir, window)
  if not summary:
    raise ValueError(f'{run_dir}/{analysis.stats_file(run_dir)} has no iterations yet')
  summary.update(run=run_dir,
                 complete=os.path.exists(os.path.join(run_dir, 'summary.json')))
  return summary, analysis.read_stats(run_dir, analysis.stats_file(run_dir))


def table(summaries: list[dict]) -> str:
  header = ('run', 'system', 'mode', 'iters', 'energy (Ha)', 'variance', 'pmove', 'time',
            'error (mHa)', 'corr. %')
  rows = []
  for s in summaries:
    err = (f'{s["error_mha"]:+.2f} +- {s["error_mha_error"]:.2f}'
           if s.get('reference_energy') is not None else '-')
    corr = (f'{s["correlation_energy_percent"]:.1f}'
            if s.get('correlation_energy_percent') is not None else '-')
    rows.append((
        os.path.basename(os.path.normpath(s['run'])),
        s['system'] + ('' if s.get('hamiltonian', 'all-electron') == 'all-electron'
                       else f' ({s["hamiltonian"]})'), s['mode'] + (
            '' if s['complete'] else ' (running)'),
        f'{s["iterations"]}', f'{s["energy"]:.6f} +- {s["energy_error"]:.6f}',
        f'{s["variance"]:.4f}' if s['variance'] is not None else '-',
        f'{s["pmove"]:.3f}' if s['pmove'] is not None else '-',
        f'{s["wall_time"]:.0f} s' if s['wall_time'] is not None else '-', err, corr))
  widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
  lines = ['  '.join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
           for r in [header] + rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def plot(summaries: list[dict], all_stats: list[dict], path: str) -> None:
  import matplotlib  # noqa: PLC0415
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, (ax_e, ax_err, ax_var) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
  for s, stats in zip(summaries, all_stats, strict=True):
    label = f'{os.path.basename(os.path.normpath(s["run"]))} ({s["system"]})'
    steps, energy = stats['step'], stats['energy']
    window = max(1, min(20, len(energy) // 20))
    smooth = analysis.moving_mean(energy, window)
    x = steps[window - 1:]
    (line,) = ax_e.plot(x, smooth, label=label)
    if s.get('reference_energy') is not None:
      ref = s['reference_energy']
      ax_e.axhline(ref, color=line.get_color(), ls='--', lw=0.8)
      ax_err.semilogy(x, np.maximum(np.abs(smooth - ref), 1e-6) * 1000, color=line.get_color())
    if 'variance' in stats:
      ax_var.semilogy(steps, analysis.moving_mean(stats['variance'], 1), color=line.get_color(),
                      lw=0.6)
  refs = [s['reference_energy'] for s in summaries if s.get('reference_energy') is not None]
  # Energy axis: from just below the lowest of energies and references, up to the highest
  # moving mean after the first 2% of iterations (the start of a run is far above).
  lo = min(refs + [s['energy'] for s in summaries]) - 0.01
  tops = [np.max(analysis.moving_mean(st['energy'], max(1, min(20, len(st['energy']) // 20)))
                 [len(st['energy']) // 50:]) for st in all_stats]
  ax_e.set_ylim(lo, min(max(tops), lo + 1.0) + 0.01)
  if refs:
    ax_err.axhline(1.6, color='grey', ls=':', lw=0.8)
    ax_err.text(0.99, 1.6, 'chemical accuracy (1.6 mHa)', ha='right', va='bottom',
                transform=ax_err.get_yaxis_transform(), fontsize=8, color='grey')
  ax_e.set_ylabel('energy (Ha), moving mean')
  ax_e.legend(fontsize=8)
  ax_err.set_ylabel('|E - E_ref| (mHa)')
  ax_var.set_ylabel('variance of E_L (Ha²)')
  ax_var.set_xlabel('iteration')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def levels(summaries: list[dict], path: str) -> None:
  """Energy levels of excited-state runs with error bars, exact levels beside them."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(summaries), 5))
  for n, s in enumerate(summaries):
    for e, de in zip(s['state_energies'], s['state_energy_errors'], strict=True):
      ax.errorbar(n, e, yerr=de if np.isfinite(de) else None, fmt='_', ms=30, capsize=4,
                  color='C0')
    for ref in s.get('state_references', []):
      ax.hlines(ref['energy'], n + 0.25, n + 0.45, color='k', lw=1)
      ax.text(n + 0.47, ref['energy'], ref['label'], va='center', fontsize=8)
  ax.set_xticks(range(len(summaries)),
                [f'{s["system"]}\n{os.path.basename(os.path.normpath(s["run"]))}'
                 for s in summaries], fontsize=8)
  ax.set_xlim(-0.5, len(summaries) - 0.2)
  ax.set_ylabel('energy (Ha): vmc (blue, error bars) and exact (black)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('runs', nargs='+', metavar='RUN_DIR')
  parser.add_argument('--window', type=float, default=None,
                      help='fraction of the last iterations to average (default: 0.2 of a '
                           'training run, all of an evaluation)')
  parser.add_argument('--plot', default='analysis.png', help='PNG to write ("" for none)')
  parser.add_argument('--json', action='store_true', help='print the summaries as JSON too')
  parser.add_argument('--levels', default='', help='PNG of the excited-state runs\' levels '
                      '("" for none)')
  args = parser.parse_args(argv)
  if args.window is not None and not 0 < args.window <= 1:
    parser.error('--window must be within (0, 1]')
  for flag, path in (('--plot', args.plot), ('--levels', args.levels)):
    problem = path and writers.cannot_write(path)
    if problem:
      print(f"analyze.py: error: {flag} {path}: {problem}; give another path, or {flag} '' "
            'for none', file=sys.stderr)
      return 2
  summaries, all_stats = [], []
  for run in args.runs:
    try:
      summary, stats = summarize_run(run, args.window)
    except (OSError, ValueError, KeyError, ConfigError) as e:
      print(f'analyze.py: error: {run}: {e}', file=sys.stderr)
      return 2
    summaries.append(summary)
    all_stats.append(stats)
  print(table(summaries))
  for s in summaries:
    extras = []
    if 'dipole_au' in s:
      extras.append('dipole (a.u.) ' + ', '.join(
          f'{d:.4f} +- {e:.4f}'
          for d, e in zip(s['dipole_au'], s['dipole_error_au'], strict=True)))
    if 's2' in s:
      extras.append(f'<S^2> {s["s2"]:.4f} +- {s["s2_error"]:.4f}')
    if s.get('states'):
      print(f'{os.path.basename(os.path.normpath(s["run"]))}:')
      print('\n'.join(analysis.state_lines(s)))
    if not s['error_converged']:
      extras.append('error bar is a lower bound: the window is short for its '
                    'autocorrelation time')
    note = analysis.heavy_tail_note(s)
    if note:
      extras.append(note)
    if extras:
      print(f'{os.path.basename(os.path.normpath(s["run"]))}: ' + '; '.join(extras))
  if args.json:
    print(json.dumps(analysis.strict_json(summaries), indent=2, allow_nan=False))
  with_states = [s for s in summaries if s.get('states')]
  outputs = [('--plot', args.plot, lambda p: plot(summaries, all_stats, p)),
             ('--levels', args.levels if with_states else '', lambda p: levels(with_states, p))]
  for flag, path, draw in outputs:
    if not path:
      continue
    try:
      draw(path)
    except OSError as e:  # e.g. a read-only file system, which the check above cannot see
      print(f'analyze.py: error: {flag} {path}: {e.strerror or e}', file=sys.stderr)
      return 2
    print(f'{flag[2:]}: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
