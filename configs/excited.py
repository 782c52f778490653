"""Excited states (NES-VMC, docs/excited_states.md): the three lowest states of helium,
`vmc --config configs/excited.py`.

The (1, 1) sector of He holds 1^1S, the M_S = 0 component of 2^3S, and 2^1S; with
system.states = 3 the run trains them together and reports each energy, the excitation
energies and, with observables.dipole, the oscillator strengths. Sized for a CPU: about
5 minutes on 2 cores, every state within 0.03 mHa of Drake's energies (three seeds;
docs/excited_states.md has the measured numbers and the evaluation command). Other
systems: --config.system.atom / molecule and --config.system.states, with a
pretrain.basis that has diffuse (Rydberg-like) orbitals, since pretraining starts the
excited states from its lowest single excitations.
"""

from vmc import config


def get_config():
  cfg = config.get_config()  # the quickstart job: He, small FermiNet, SPRING, 256 walkers
  cfg.system.states = 3
  cfg.pretrain.basis = 'aug-ccpvdz'  # its 2s-like virtual orbital starts 2S states
  cfg.pretrain.iterations = 500
  cfg.optim.iterations = 6000
  return cfg
