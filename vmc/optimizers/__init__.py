"""Optimizers, one module each, chosen by name from a registry (`optim.optimizer`).

Each module defines `make(<its config section>, lr, objective) -> vmc.types.Optimizer`
(the section `optim.<name>`, the learning-rate section `optim.lr`): an optax-style pair
`init(params, key, x) -> opt_state` and `update(params, opt_state, key, x, step) ->
(params, opt_state, UpdateStats)`, per-device functions that the iteration
(`vmc.iteration`) compiles over the devices together with the sampling step into one call
(kfac-jax's step too: it is traced inside kfac-jax's staging context). The NaN guard is
not the optimizers' business: the iteration applies it to whatever they return.

To add an optimizer: a module here with `make`, its name in `_MODULES` and in
vmc.spec.OPTIMIZERS, its keys in vmc/spec.py (section `optim.<name>`). Modules are imported
only when chosen, so that importing this package stays cheap. 'none' is no optimizer but
the evaluation mode (the key value kept for FermiNet's users): vmc.iteration builds it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vmc import spec

if TYPE_CHECKING:
  from vmc import types

_MODULES = {
    'kfac': 'vmc.optimizers.kfac',
    'spring': 'vmc.optimizers.sr',
    'minsr': 'vmc.optimizers.sr',
    'adam': 'vmc.optimizers.adam',
}
assert set(_MODULES) | {'none'} == set(spec.OPTIMIZERS)


def make(optim: spec.OptimSpec, objective: types.Objective) -> types.Optimizer:
  """The optimizer named by optim.optimizer (not 'none'), built for `objective`."""
  name = optim.optimizer
  if name == 'kfac':
    from vmc.optimizers import kfac_support  # noqa: PLC0415
    kfac_support.check()  # one line, before anything runs, where kfac-jax cannot run here
  module = importlib.import_module(_MODULES[name])
  return module.make(getattr(optim, name), optim.lr, objective)
