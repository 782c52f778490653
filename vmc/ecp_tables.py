"""Effective core potential tables: an element's ECP (replaced core electrons, radial
channels) from PySCF's tables, and its radial functions on the host.

The data only: vmc.systems reads the core sizes from here, vmc.pseudopotential builds the
Hamiltonian terms on top. Channels are stored as PySCF stores them
(`pyscf.gto.basis.load_ecp`: l = -1 is the local channel, then l = 0, 1, ...; entry n of
a channel lists the (a_k, c_k) of r^(n - 2)), each term c_k r^(n_k - 2) exp(-a_k r^2).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from vmc.errors import ConfigError
from vmc.spec import PP_TYPES

CUTOFF_TOLERANCE = 1e-6  # hartree: sum_l (2l+1) |v_l(r)| beyond the cutoff radius


@dataclasses.dataclass(frozen=True)
class ElementECP:
  """The ECP of one element: electrons replaced, local and nonlocal radial channels.

  Each channel is an array (n_terms, 3) of (n, exponent, coefficient), the term
  coefficient * r^(n - 2) * exp(-exponent r^2).
  """
  symbol: str
  core: int
  local: np.ndarray
  nonlocal_channels: tuple[np.ndarray, ...]  # l = 0, 1, ..., l_max

  @property
  def l_max(self) -> int:
    return len(self.nonlocal_channels) - 1

  def cutoff(self) -> float:
    """Radius (bohr) beyond which sum_l (2l+1) |v_l(r)| < CUTOFF_TOLERANCE; 0 without a
    nonlocal part."""
    if not self.nonlocal_channels:
      return 0.0
    r = np.linspace(1e-3, 30.0, 30000)
    total = sum((2 * ang + 1) * np.abs(radial_np(ch, r))
                for ang, ch in enumerate(self.nonlocal_channels))
    above = np.nonzero(total >= CUTOFF_TOLERANCE)[0]
    return float(r[above[-1] + 1]) if above.size else 0.0


def _channel(powers: list) -> np.ndarray:
  rows = [(n, a, c) for n, terms in enumerate(powers) for a, c in terms]
  return np.array(rows, np.float64).reshape(-1, 3)


@functools.cache
def load(kind: str, symbol: str) -> ElementECP:
  """The ECP `kind` (e.g. 'ccecp') of an element, read from PySCF's tables."""
  from pyscf import gto
  if kind not in PP_TYPES:
    raise ConfigError(f'system.pp.type={kind!r} is not known; use one of {PP_TYPES}')
  try:
    core, channels = gto.basis.load_ecp(kind, symbol)
  except Exception:  # PySCF raises several types for an element without the ECP
    core, channels = 0, []
  if not channels:
    raise ConfigError(f'PySCF has no {kind} pseudopotential for {symbol}; drop {symbol} '
                      'from system.pp.symbols or set system.use_pp=False')
  by_l = {int(ang): _channel(powers) for ang, powers in channels}
  l_max = max(by_l)
  local = by_l.pop(-1, np.zeros((0, 3)))
  nonlocal_channels = tuple(by_l.get(ang, np.zeros((0, 3))) for ang in range(l_max + 1))
  return ElementECP(symbol, int(core), local, nonlocal_channels)


def radial_np(channel: np.ndarray, r: np.ndarray) -> np.ndarray:
  n, a, c = (channel[:, k, None] for k in range(3))
  return np.sum(c * r[None] ** (n - 2) * np.exp(-a * r[None] ** 2), axis=0)
