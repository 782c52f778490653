"""Force estimators on wavefunctions with known answers, sampled exactly (no Markov chain):
the hydrogen atom, exact and displaced from its nucleus, and the LCAO H2+ ion, whose
variational energy E(R) is known in closed form."""

import jax.numpy as jnp
import numpy as np

from vmc import forces, hamiltonian, nuclei, parallel, systems


def _sample_1s(rng, n, centre):
  """n positions from |exp(-|r - centre|)|^2: radius ~ Gamma(3, 1/2), direction uniform."""
  u = rng.normal(size=(n, 3))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  return centre + u * rng.gamma(3.0, 0.5, size=(n, 1))


def _one_electron_wavefunction(centres_of):
  """psi(x; atoms) = sum over the centres of exp(-|r - centre|), the centres a function of
  the nuclear positions (so that d log|psi| / dR is what it should be)."""
  def apply_at(params, x, atoms):
    del params
    orbital = jnp.sum(jnp.exp(-jnp.linalg.norm(x[None, :] - centres_of(atoms), axis=-1)))
    return jnp.ones(()), jnp.log(orbital)
  return apply_at


def _estimates(apply_at, system, walkers, batches):
  """Per-batch estimates of every estimator, (batches, n_atoms, 3) each."""
  wavefunction = lambda params, x: apply_at(params, x, jnp.asarray(system.positions,
                                                                   jnp.float32))
  local_energy = hamiltonian.batched(hamiltonian.make_local_energy(wavefunction, system, 'loop'))
  estimate = parallel.pmap(forces.make(apply_at, local_energy, system.positions,
                                       system.charges))
  x = np.asarray(walkers, np.float32).reshape(batches, -1, 3)
  out = {k: [] for k in forces.ESTIMATORS}
  for chunk in x:
    values = parallel.first(estimate(parallel.replicate({}), parallel.shard(chunk)))
    for k in forces.ESTIMATORS:
      out[k].append(np.asarray(values[f'forces_{k}']))
  return {k: np.stack(v) for k, v in out.items()}


def _hydrogen(position):
  return systems.make_system(molecule=[('H', tuple(position))], spin=1)


def test_exact_hydrogen_atom_zv_and_zvzb_are_zero_on_every_walker():
  """psi = exp(-|r - R|), the exact ground state: the zv estimator is zero walker by walker
  (zero variance); E_L is -1/2 everywhere, so the Pulay term vanishes and zvzb = zv."""
  system = _hydrogen((0.3, -0.2, 0.1))
  walkers = _sample_1s(np.random.default_rng(0), 4096, system.positions[0])
  est = _estimates(_one_electron_wavefunction(lambda atoms: atoms), system, walkers, 64)
  np.testing.assert_allclose(est['zv'], 0.0, atol=2e-5)
  np.testing.assert_allclose(est['zvzb'], 0.0, atol=2e-5)
  assert np.std(est["hf"]) > 0.05  # the bare estimator's fluctuations, for contrast


def test_hydrogen_displaced_from_its_nucleus_hellmann_feynman_force():
  """psi = exp(-|r - a|) with the nucleus at the origin, |a| = s: by Gauss's law the force
  on the nucleus points to a with size q(s) / s^2, q(s) = 1 - exp(-2s)(1 + 2s + 2s^2) the
  electron charge inside radius s of the cloud's centre. hf and zv agree with it; zv's
  variance is lower (the ratio is printed)."""
  s = 1.0
  a = np.array([0.0, 0.0, s])
  system = _hydrogen((0.0, 0.0, 0.0))
  walkers = _sample_1s(np.random.default_rng(1), 400_000, a)
  est = _estimates(_one_electron_wavefunction(lambda atoms: jnp.asarray(a)[None]), system,
                   walkers, 400)
  exact = (1.0 - np.exp(-2 * s) * (1 + 2 * s + 2 * s * s)) / s ** 2  # 0.3233
  hf_z, zv_z = est['hf'][:, 0, 2], est['zv'][:, 0, 2]
  zv_error = zv_z.std() / np.sqrt(len(zv_z))
  assert abs(zv_z.mean() - exact) < 4 * zv_error, (zv_z.mean(), zv_error, exact)
  # hf has infinite variance (its batch means are heavy-tailed): a looser, fixed bound.
  assert abs(hf_z.mean() - exact) < 0.02, (hf_z.mean(), exact)
  np.testing.assert_allclose(est['zv'][:, 0, :2].mean(0), 0.0, atol=5 * zv_error)
  ratio = hf_z.var() / zv_z.var()
  print(f'displaced H: variance of batch means hf / zv = {ratio:.1f}')
  assert ratio > 5


def _lcao_h2plus_energy(r):
  """Variational energy of psi = 1s_A + 1s_B (unit exponent) for H2+ at bond length r
  (closed form: overlap S, Coulomb J and exchange K integrals)."""
  s = np.exp(-r) * (1 + r + r * r / 3)
  j = -1 / r + np.exp(-2 * r) * (1 + 1 / r)
  k = -np.exp(-r) * (1 + r)
  return -0.5 + 1 / r + (j + k) / (1 + s)


def test_lcao_h2plus_zvzb_is_minus_the_derivative_of_the_variational_energy():
  """H2+ with psi = 1s_A + 1s_B at R = 2 bohr: the energy of this fixed-form psi is known
  in closed form, and zvzb must give -dE/dR exactly (in expectation), while hf and zv
  (equal in expectation) miss the Pulay term. The forces on the two protons are equal and
  opposite and perpendicular components vanish."""
  r = 2.0
  system = systems.make_system(molecule=[('H', (0, 0, 0)), ('H', (0, 0, r))], charge=1)
  assert system.electrons == (1, 0)
  rng = np.random.default_rng(2)
  # Exact samples of (1s_A + 1s_B)^2 by rejection from the mixture (1s_A^2 + 1s_B^2) / 2.
  n = 120_000
  centres = np.where(rng.random((n, 1)) < 0.5, 0.0, 1.0) * np.array([0, 0, r])
  x = _sample_1s(rng, n, centres)
  phi = [np.exp(-np.linalg.norm(x - c, axis=1)) for c in system.positions]
  keep = rng.random(n) < (phi[0] + phi[1]) ** 2 / (2 * (phi[0] ** 2 + phi[1] ** 2))
  walkers = x[keep][:60_000]
  est = _estimates(_one_electron_wavefunction(lambda atoms: atoms), system, walkers, 60)
  h = 1e-4
  exact = -(_lcao_h2plus_energy(r + h) - _lcao_h2plus_energy(r - h)) / (2 * h)  # on B
  mean = {k: v.mean(0) for k, v in est.items()}
  err = {k: v.std(0) / np.sqrt(len(v)) for k, v in est.items()}
  zvzb_b, e_b = mean['zvzb'][1, 2], err['zvzb'][1, 2]
  assert abs(zvzb_b - exact) < 4 * e_b and e_b < 0.005, (zvzb_b, e_b, exact)
  assert abs(mean['zvzb'][0, 2] + exact) < 4 * err['zvzb'][0, 2]  # equal and opposite
  np.testing.assert_allclose(mean['zvzb'][:, :2], 0.0, atol=5 * err['zvzb'][:, :2].max())
  # The Pulay term of this (non-optimal) psi is large: hf and zv are off, and agree.
  assert abs(mean['zv'][1, 2] - exact) > 10 * err['zv'][1, 2], (mean['zv'], exact)
  assert abs(mean['hf'][1, 2] - mean['zv'][1, 2]) < 4 * np.hypot(err['hf'][1, 2],
                                                                 err['zv'][1, 2])
  print(f'H2+ LCAO R=2: -dE/dR = {exact:.4f}; zvzb {zvzb_b:.4f} +- {e_b:.4f}; zv '
        f'{mean["zv"][1, 2]:.4f} +- {err["zv"][1, 2]:.4f}; hf {mean["hf"][1, 2]:.4f} +- '
        f'{err["hf"][1, 2]:.4f}')


def test_nuclear_forces_are_coulomb_repulsion():
  atoms = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
  charges = np.array([3.0, 1.0, 2.0])
  f = nuclei.forces(atoms, charges)
  np.testing.assert_allclose(f.sum(0), 0.0, atol=1e-12)
  np.testing.assert_allclose(f[1], [-2 * 3 / 13 ** 1.5, 0, 3 / 4 + 2 * 2 / 13 ** 1.5])
