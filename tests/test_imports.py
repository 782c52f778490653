"""The import graph of vmc: no cycles, counting imports inside functions too (a lazy
import hides a cycle from Python, not from the reader), and TYPE_CHECKING imports too."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _module_name(path):
  parts = list(path.relative_to(ROOT).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def import_graph():
  """{module: set of vmc modules it imports} over vmc/."""
  modules = {_module_name(p): p for p in (ROOT / 'vmc').rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    edges = set()
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1]
                          + ([base] if base else []))
        # `from vmc import x` imports the module vmc.x when there is one.
        targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base
                   for a in node.names]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    # A module imports its packages' __init__ too, which is no cycle of its own making.
    graph[name] = edges - {p for p in modules if name.startswith(p + '.')}
  return graph


def _cycles(graph):
  """Every strongly connected component of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_the_cycle_finder_finds_a_cycle():
  assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
  assert _cycles({'a': {'b'}, 'b': set()}) == []


def test_vmc_has_no_import_cycle():
  graph = import_graph()
  assert 'vmc.config' in graph and 'vmc.spec' in graph['vmc.config']
  assert _cycles(graph) == []


def test_the_spec_is_a_leaf():
  assert import_graph()['vmc.spec'] <= {'vmc.errors'}
