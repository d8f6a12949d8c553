"""The house rules a newcomer relies on: no import cycles, the core imports no job, small files."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "distilbert_jax"
MAX_LINES = 450  # "about 400": one concern, readable in one sitting


def _module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
  return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _ancestors(name: str) -> list:
  parts = name.split(".")
  return [".".join(parts[:i]) for i in range(1, len(parts))]


def _is_type_checking(test) -> bool:
  return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
      isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph() -> dict:
  """module -> the project modules it imports (at any depth: lazy imports count), with the
  packages whose __init__ runs first, but not the importer's own packages."""
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    targets = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
      if id(node) in typing_only:
        continue  # annotations only: never imported at run time
      if isinstance(node, ast.Import):
        targets.update(a.name for a in node.names if a.name.startswith("distilbert_jax"))
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("distilbert_jax"):
        for alias in node.names:
          child = f"{node.module}.{alias.name}"
          targets.add(child if child in modules else node.module)
    own = set(_ancestors(name)) | {name}
    edges = set()
    for target in targets:
      edges.update(t for t in [target, *_ancestors(target)] if t in modules and t not in own)
    graph[name] = edges
  return graph


def find_cycle(graph: dict):
  """One import cycle as a list of modules, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_the_package_has_no_import_cycle():
  assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_imports_no_job_and_no_command():
  graph = import_graph()
  core = [m for m in graph if not m.startswith(("distilbert_jax.jobs", "distilbert_jax.main"))]
  for module in core:
    jobs = sorted(t for t in graph[module] if t.startswith(("distilbert_jax.jobs", "distilbert_jax.main")))
    if module.startswith("distilbert_jax.hardware.aot") and jobs == ["distilbert_jax.jobs"]:
      continue  # the compile command's library lowers the job that the registry builds
    assert not jobs, f"{module} imports {jobs}"


def test_no_library_file_is_longer_than_one_sitting():
  long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
          if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, long
