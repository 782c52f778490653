"""A potential-energy scan: energies and forces with error bars over many geometries.

  python scripts/scan.py --config configs/h2_scan.py --bond_lengths 1.0,1.2,1.4,1.6 \
      --out checkpoints/h2_scan
  python scripts/scan.py --config configs/molecule.py --config.system.molecule=H2O \
      --geometries frames.xyz --out checkpoints/h2o_frames

Geometries: --bond_lengths (bohr) for a diatomic (the config's two atoms, along z), or
--geometries, any file ASE reads with several frames (e.g. extended XYZ, in angstrom as
ASE has it). Each geometry is trained (the first one from the config's pretraining and
optim.iterations, each next one warm-started from its neighbour for --warm_iterations;
--cold starts every one afresh) and evaluated for --eval_iterations with forces. Results:
<out>/scan.json and <out>/scan.extxyz (vmc.scans). Every --config.KEY of `vmc` applies to
every geometry. Run the same command again after an interruption: finished geometries are
not recomputed.
"""

from __future__ import annotations

import math
import os
import sys

from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vmc import cli, config as config_lib, geometry, runtime, scans  # noqa: E402
from vmc.errors import ConfigError  # noqa: E402

_BONDS = flags.DEFINE_string('bond_lengths', '', 'comma-separated bond lengths (bohr) of a '
                             'diatomic')
_GEOMETRIES = flags.DEFINE_string('geometries', '', 'a multi-frame geometry file ASE reads')
_OUT = flags.DEFINE_string('out', '', 'folder of the scan (required; rerun to continue)')
_WARM = flags.DEFINE_integer('warm_iterations', 1000, 'training iterations after a warm '
                             'start')
_EVAL = flags.DEFINE_integer('eval_iterations', 2000, 'evaluation iterations per geometry')
_COLD = flags.DEFINE_bool('cold', False, 'start every geometry afresh (pretraining and '
                          'optim.iterations), no warm starts')


def geometries(cfg) -> list[scans.Geometry]:
  if bool(_BONDS.value) == bool(_GEOMETRIES.value):
    raise ConfigError('give exactly one of --bond_lengths (a diatomic) or --geometries FILE')
  if _GEOMETRIES.value:
    try:
      from ase import io, units  # noqa: PLC0415
    except ImportError:
      raise ConfigError("--geometries needs ASE: pip install 'vmc[ase]'") from None
    try:
      frames = io.read(_GEOMETRIES.value, index=':')
    except Exception as e:  # noqa: BLE001  (ASE raises many kinds on a bad file)
      raise ConfigError(f'--geometries {_GEOMETRIES.value}: cannot read it ({e})') from None
    return [[(s, tuple(float(v) / units.Bohr for v in p)) for s, p in
             zip(f.get_chemical_symbols(), f.get_positions(), strict=True)] for f in frames]
  system = config_lib.resolve_system(cfg)
  if len(system.atoms) != 2:
    raise ConfigError(f'--bond_lengths needs a diatomic; the config has {len(system.atoms)} '
                      'atoms (set --config.system.molecule, or use --geometries)')
  try:
    bonds = [float(v) for v in _BONDS.value.split(',')]
  except ValueError:
    raise ConfigError(f'--bond_lengths={_BONDS.value}: not comma-separated numbers') from None
  if not all(math.isfinite(r) and r > 0.1 for r in bonds):
    raise ConfigError(f'--bond_lengths={_BONDS.value}: every bond length must be a finite '
                      'number of bohr larger than 0.1')
  symbols = (system.atoms[0].symbol, system.atoms[1].symbol)
  return [geometry.diatomic(symbols, r) for r in bonds]


def job(cfg) -> None:
  scans.check_out(_OUT.value)
  plan = scans.PointPlan(warm_iterations=_WARM.value, eval_iterations=_EVAL.value)
  scans.check_plan(plan)
  found = geometries(cfg)
  scans.check_geometries(cfg, found, plan)
  logging.info('scan of %d geometries in %s (%s)', len(found), _OUT.value,
               'cold starts' if _COLD.value else 'warm starts')
  scans.scan(cfg, found, _OUT.value, plan, warm=not _COLD.value)


if __name__ == '__main__':
  runtime.reexec_with_huge_pages()  # as the vmc command does (vmc/runtime.py)
  cli.main(job)
