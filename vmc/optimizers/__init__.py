"""Optimizers, one module each, chosen by name from a registry (`optim.optimizer`).

Each module defines `make(spec, objective) -> vmc.types.Optimizer`: an optax-style pair
`init(params, key, x) -> opt_state` and `update(params, opt_state, key, x, step) ->
(params, opt_state, UpdateStats)`, per-device functions that the iteration
(`vmc.iteration`) compiles over the devices together with the sampling step into one call
(kfac-jax's step too: it is traced inside kfac-jax's staging context). The NaN guard is
not the optimizers' business: the iteration applies it to whatever they return.

To add an optimizer: a module here with `make`, its name in `_MODULES`, its keys in
`vmc/config.py` (section `optim.<name>`). Modules are imported only when chosen, so that
importing this package (the config does, for the names) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from vmc import config, types

_MODULES = {
    'kfac': 'vmc.optimizers.kfac',
    'spring': 'vmc.optimizers.sr',
    'minsr': 'vmc.optimizers.sr',
    'adam': 'vmc.optimizers.adam',
    'none': 'vmc.optimizers.none',
}
NAMES = tuple(_MODULES)


def make(spec: config.Spec, objective: types.Objective) -> types.Optimizer:
  """The optimizer named by spec.optim.optimizer, built for `objective`."""
  if spec.optim.optimizer == 'kfac':
    from vmc.optimizers import kfac_support  # noqa: PLC0415
    kfac_support.check()  # one line, before anything runs, where kfac-jax cannot run here
  module = importlib.import_module(_MODULES[spec.optim.optimizer])
  return module.make(spec, objective)
