"""vmc: neural-network variational Monte Carlo for atoms and molecules."""

__version__ = '0.1.0'
