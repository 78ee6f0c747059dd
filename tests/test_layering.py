"""gibbon's package is a one-way stack: every import points down, nothing imports ``gibbon.cli``.

The layers, lowest first (a module may import only from its own layer's package or from below):

    gibbon._version       the version string (read by model cards and cache keys)
    gibbon.core           threat models, losses, input checks
    gibbon.data           data sets as tensors
    gibbon.zoo            architectures, the trainer, safetensors I/O, the trained-model cache
                          (a defended model is trained with a defense *object* its caller passes)
    gibbon.serve          the prediction server (its wire format is shared with oracles.http)
    gibbon.oracles        black-box views of models
    gibbon.attacks        adversarial attacks
    gibbon.defenses       training defenses, input transformations, smoothing
    gibbon.transfer       transfer attacks
    gibbon.evaluation     robustness evaluation, reports, diagnosis
    gibbon                the package's own ``__init__`` (re-exports attacks, core, evaluate)
    gibbon.poisoning      poisoning and backdoors
    gibbon.privacy        membership inference, PATE, audits
    gibbon.physical       universal perturbations, patches
    gibbon.extraction     model extraction
    gibbon.reproductions  the papers' reproduction targets, and their shared helpers
                          (``gibbon.reproductions._common``: Target, _row, write_json, ...)
    gibbon.reproduce      the target table ``gibbon reproduce`` runs
    gibbon.experiments    experiment files (``gibbon run experiment.yaml``): models, data, attacks, eps
    gibbon.*.command      the sub-apps' commands (``gibbon.serve.command``, ``gibbon.poisoning.command``,
                          ...): the command line split by subject, so they sit with it, above every
                          package (``gibbon serve --mad-eps`` uses extraction's defense), imported
                          only by gibbon.cli
    gibbon.cli            the command line: imports everything, imported by nothing

How the graph is read: every ``import gibbon...`` and ``from gibbon... import`` anywhere in a file,
imports inside functions included (a lazy import is still a dependency), and
``importlib.import_module("gibbon...")`` with a literal name. ``from gibbon.x import y`` is an edge to
the module ``gibbon.x.y`` when that is a module, else to ``gibbon.x``. A package's ``__init__`` is
the package module.

Rules checked:

* no module imports ``gibbon.cli``;
* inside one subpackage, modules import their siblings directly, never their own package
  (``gibbon.attacks.pgd`` must not import ``gibbon.attacks``: the package's ``__init__`` imports its
  submodules, so that would be a cycle);
* the module graph has no cycles (strongly connected components of more than one module);
* collapsed to layers (``gibbon.attacks.pgd`` -> ``gibbon.attacks``; top-level modules such as
  ``gibbon.cli`` are their own layer; every ``gibbon.PACKAGE.command`` goes to ``gibbon.*.command``),
  every edge between two layers points down the list above;
* ``import gibbon`` does not load ``gibbon.cli``, and every module imports cleanly, ``gibbon.cli``
  last, without any earlier one having loaded it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
CLI = "gibbon.cli"
LAYERS = ["gibbon._version", "gibbon.core", "gibbon.data", "gibbon.zoo", "gibbon.serve", "gibbon.oracles",
          "gibbon.attacks", "gibbon.defenses", "gibbon.transfer", "gibbon.evaluation", "gibbon", "gibbon.poisoning",
          "gibbon.privacy", "gibbon.physical", "gibbon.extraction", "gibbon.reproductions", "gibbon.reproduce", "gibbon.experiments",
          "gibbon.*.command", CLI]


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``src/gibbon`` (``__init__`` is the package)."""
    modules = {}
    for path in sorted((src / "gibbon").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported_by_name(call: ast.Call) -> str | None:
    """The literal module name of ``importlib.import_module("gibbon...")``, else None."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name != "import_module" or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """``(imported gibbon module, line)`` for every gibbon import in ``path``."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node)
            if base:
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    found.append((child if child in known else base, node.lineno))
        elif isinstance(node, ast.Call):
            name = _imported_by_name(node)
            if name:
                found.append((name, node.lineno))
    return [(name, line) for name, line in found
            if (name == "gibbon" or name.startswith("gibbon.")) and name != module]


def import_graph(src: Path = SRC) -> dict[str, list[tuple[str, int]]]:
    modules = module_files(src)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def layer_of(module: str) -> str:
    """``gibbon.attacks.pgd`` -> ``gibbon.attacks``; ``gibbon.cli`` and ``gibbon`` are their own layer;
    ``gibbon.serve.command`` -> ``gibbon.*.command``."""
    parts = module.split(".")
    if len(parts) == 3 and parts[2] == "command":
        return "gibbon.*.command"
    return ".".join(parts[:2])


def strongly_connected(adjacency: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one node, each sorted (iterative: no recursion limit)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(adjacency):
        if root in index:
            continue
        work = [(root, iter(sorted(adjacency[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(adjacency.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _where(graph, source_pred, target_pred) -> list[str]:
    return [f"{module}:{line} imports {target}" for module, edges in sorted(graph.items())
            for target, line in edges if source_pred(module) and target_pred(target)]


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "gibbon" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "gibbon" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from gibbon.cli import app\n    import importlib\n"
                              "    return importlib.import_module('gibbon.sub.b')\n")
    (pkg / "b.py").write_text("from gibbon import sub\nfrom gibbon.sub import a\n")
    found = import_graph(tmp_path)
    assert sorted(t for t, _ in found["gibbon.sub.a"]) == ["gibbon.cli", "gibbon.sub.b"]
    assert sorted(t for t, _ in found["gibbon.sub.b"]) == ["gibbon.sub", "gibbon.sub.a"]
    assert found["gibbon.sub"] == [("gibbon.sub.a", 1)]
    adjacency = {m: {t for t, _ in e} for m, e in found.items()}
    assert strongly_connected(adjacency) == [["gibbon.sub", "gibbon.sub.a", "gibbon.sub.b"]]


def test_nothing_imports_the_cli(graph):
    offenders = _where(graph, lambda m: m != CLI, lambda t: t == CLI or t.startswith(CLI + "."))
    assert not offenders, "gibbon.cli is the top layer; move what these need below it:\n" + "\n".join(offenders)


def test_submodules_import_siblings_not_their_own_package(graph):
    offenders = [f"{module}:{line} imports its own package {target}" for module, edges in sorted(graph.items())
                 for target, line in edges if target != "gibbon" and module.startswith(target + ".")]
    assert not offenders, "import the sibling module directly:\n" + "\n".join(offenders)


def test_no_import_cycles_between_modules(graph):
    adjacency = {module: {t for t, _ in edges if t in graph} for module, edges in graph.items()}
    cycles = strongly_connected(adjacency)
    details = []
    for component in cycles:
        members = set(component)
        details.append(" <-> ".join(component) + "\n    " + "\n    ".join(
            _where(graph, lambda m: m in members, lambda t: t in members)))
    assert not cycles, "import cycles:\n" + "\n".join(details)


def test_layers_only_import_downwards(graph):
    unknown = sorted({layer_of(m) for m in graph} - set(LAYERS))
    assert not unknown, f"add these to LAYERS (and the docstring) at their place in the stack: {unknown}"
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = [f"{module}:{line} imports {target} ({layer_of(target)} is above {layer_of(module)})"
              for module, edges in sorted(graph.items()) for target, line in edges
              if rank[layer_of(target)] > rank[layer_of(module)]]
    collapsed = defaultdict(set)
    for module, edges in graph.items():
        for target, _ in edges:
            if layer_of(target) != layer_of(module):
                collapsed[layer_of(module)].add(layer_of(target))
    cycles = strongly_connected({layer: collapsed.get(layer, set()) for layer in LAYERS})
    assert not upward and not cycles, ("back-edges between layers:\n" + "\n".join(upward)
                                       + "\nlayer cycles: " + "; ".join(" <-> ".join(c) for c in cycles))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_gibbon_does_not_load_the_cli():
    done = _run("import sys, gibbon; print(sorted(m for m in sys.modules if m.startswith('gibbon.cli')))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_module_imports_cleanly_and_none_loads_the_cli():
    names = sorted(m for m in module_files() if m != CLI) + [CLI]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    if name == 'gibbon.cli' and 'gibbon.cli' in sys.modules:\n"
            "        sys.exit('gibbon.cli was loaded by a module below it')\n"
            "    importlib.import_module(name)\n")
    done = _run(code)
    assert done.returncode == 0, done.stderr[-3000:]
