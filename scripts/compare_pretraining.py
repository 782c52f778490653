"""Measures what Hartree-Fock pretraining buys: the same runs with and without it.

For each system, two runs with the same seed and settings, pretrain.method = 'hf' and
'none'; prints a Markdown table: HF energy, the energy of the first VMC iteration, and
the iterations until the 100-iteration moving mean is within 5 mHa (and 2 mHa) of the
exact energy.

  python scripts/compare_pretraining.py --systems Li,LiH --iterations 3000 --out /tmp/pt
"""

import os

from absl import app, flags, logging

from vmc import analysis, config, pretrain, reference, train

FLAGS = flags.FLAGS
flags.DEFINE_list('systems', ['Li', 'LiH'], 'atoms or named molecules')
flags.DEFINE_integer('iterations', 3000, 'KFAC iterations per run')
flags.DEFINE_integer('pretrain_iterations', 1000, 'pretraining iterations')
flags.DEFINE_integer('batch_size', 512, 'walkers')
flags.DEFINE_string('out', 'checkpoints/compare_pretraining', 'folder for the runs')
flags.DEFINE_integer('seed', 23, 'seed shared by all runs')


def make_config(system: str, method: str):
  cfg = config.default()
  if system in config.systems.ELEMENTS:
    cfg.system.atom = system
  else:
    cfg.system.molecule = system
  cfg.batch_size = FLAGS.batch_size
  cfg.network.determinants = 8
  cfg.network.ferminet.hidden_dims = ((64, 16), (64, 16), (64, 16))
  cfg.optim.iterations = FLAGS.iterations
  cfg.pretrain.method = method
  cfg.pretrain.iterations = FLAGS.pretrain_iterations
  cfg.debug.seed = FLAGS.seed
  cfg.log.save_path = os.path.join(FLAGS.out, f'{system}_{method}')
  return cfg


def main(argv):
  del argv
  lines = ['| system | pretraining | E_HF (Ha) | first VMC E (Ha) | iterations to 5 mHa | '
           'to 2 mHa | final 500-it mean error (mHa) |', '|---|---|---|---|---|---|---|']
  for system in FLAGS.systems:
    for method in ('hf', 'none'):
      cfg = make_config(system, method)
      spec = config.resolve(cfg)
      if os.path.exists(os.path.join(cfg.log.save_path, 'train_stats.csv')):
        logging.info('reusing %s', cfg.log.save_path)
      else:
        train.run(spec)
      stats = analysis.read_stats(cfg.log.save_path)
      e = stats['energy']
      exact = reference.lookup(spec.system).energy
      hf = pretrain.hartree_fock(spec.system, spec.pretrain.basis).energy
      to5 = analysis.iterations_to_reach(e, exact, 0.005)
      to2 = analysis.iterations_to_reach(e, exact, 0.002)
      final = 1000 * (e[-500:].mean() - exact)
      lines.append(f'| {system} | {method} | {hf:.5f} | {e[0]:.4f} | {to5 or "not reached"} '
                   f'| {to2 or "not reached"} | {final:+.2f} |')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
