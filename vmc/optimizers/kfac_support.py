"""Whether the installed kfac-jax runs on the installed JAX, known before a KFAC run starts.

kfac-jax 0.0.8, its newest release (2026-02), runs on jax <= 0.9.1 only. What breaks,
found by running it (docs/install.md has the record):

- jax 0.9.2 made `Primitive.get_bind_params` return the parameters alone; 0.0.8's graph
  evaluator unpacks two values (a ValueError, or for a primitive with exactly two
  parameters a call with the wrong arguments) when it traces the loss for curvature.
- jax 0.10 removed `jax.device_put_replicated`, which 0.0.8 calls on its classic-pmap path.
- jax 0.11 removed `jax.core.Effects`, `no_effects`, `gensym`, `DropVar`, `DebugInfo` and
  `new_jaxpr_eqn` (0.0.8 fails at import), merged `ClosedJaxpr` into `Jaxpr` and dropped
  `Var.count`: 0.0.8's graph matcher builds jaxprs as `ClosedJaxpr(jaxpr=..., consts=...)`
  and orders a layer's parameters by `Var.count`.

The last are changes of JAX's jaxpr data model deep inside kfac-jax's graph matcher: a
patch from outside would be a rewrite of that matcher, so vmc makes none. kfac-jax's
development branch has all the fixes; vmc's KFAC runs with it on jax 0.11.2 and 0.12.0.1
(commit `DEVELOPMENT_COMMIT`). On a JAX where the installed kfac-jax cannot run, a KFAC run
stops before it starts, with one line naming the ways out (`check`).
"""

from __future__ import annotations

import importlib.metadata

from vmc.errors import ConfigError, one_line

DEVELOPMENT_COMMIT = 'babd85368ca209861ac947c829c0cf57592f7d22'  # 2026-08-19, tested
INSTALL_DEVELOPMENT = ("pip install 'kfac-jax @ git+https://github.com/google-deepmind/"
                       f"kfac-jax@{DEVELOPMENT_COMMIT}'")


def problem() -> str | None:
  """Why the installed kfac-jax cannot run vmc's KFAC on this JAX, or None if it can.

  Imports kfac-jax and traces its graph evaluator on one jaxpr equation (x + y): the first
  thing that breaks on a newer JAX. Milliseconds; nothing is computed or compiled, and
  JAX's backend is not started. Importing kfac-jax 0.0.8 on jax 0.9 sets
  jax_pmap_shmap_merge=False, the value runtime.configure gives every run anyway.
  """
  import jax  # noqa: PLC0415
  try:
    from kfac_jax._src import tag_graph_matcher  # noqa: PLC0415
  except ImportError as e:
    return f'kfac-jax cannot be imported ({one_line(e, 200)})'
  except AttributeError as e:  # a name that this JAX no longer has
    return f'kfac-jax fails at import on this JAX ({one_line(e, 200)})'
  except Exception as e:  # noqa: BLE001  (any failure of a library's import: the same answer)
    return f'kfac-jax fails at import on this JAX ({type(e).__name__}: {one_line(e, 200)})'
  try:
    eqn = jax.make_jaxpr(lambda x, y: x + y)(1.0, 1.0).eqns[0]
    traced = jax.make_jaxpr(lambda x, y: tag_graph_matcher.eval_jaxpr_eqn(eqn, [x, y]))(
        1.0, 1.0)
    works = ([e.primitive.name for e in traced.eqns] == ['add'] and
             list(traced.eqns[0].invars) == list(traced.jaxpr.invars))
  except Exception as e:  # noqa: BLE001  (whatever breaks, KFAC cannot run here)
    return f'its graph evaluator fails on this JAX ({one_line(e, 200)})'
  return None if works else 'its graph evaluator does not reproduce x + y on this JAX'


def check() -> None:
  """Raises ConfigError (one line: the versions, why, and the ways out) unless KFAC can run."""
  reason = problem()
  if reason is None:
    return
  import jax  # noqa: PLC0415
  try:
    installed = importlib.metadata.version('kfac-jax')
  except importlib.metadata.PackageNotFoundError:
    installed = 'none'
  raise ConfigError(
      f'optim.optimizer=kfac: kfac-jax {installed} does not run on jax {jax.__version__}: '
      f'{reason}. Its newest release, 0.0.8, supports jax <= 0.9.1. Use '
      '--config.optim.optimizer=spring (or adam), or install the development kfac-jax '
      f'that vmc is tested with: {INSTALL_DEVELOPMENT}, or use Python 3.11 with '
      'constraints.txt (jax 0.9.1); README, "Installation"')

