"""The package's shape: stages as subpackages, dependencies pointing one way, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "idclab"
# Lower layers never import higher ones: entry points -> training -> evaluation -> tracking -> config ->
# classifier -> data/models/scoring -> file, signal and console-verbosity utilities.
LAYERS = {"fileutil": 0, "termination": 0, "verbosity": 0, "data": 1, "models": 1, "scoring": 1, "classifier": 2,
          "config": 3, "tracking": 4, "evaluation": 5, "training": 6, "cli": 7, "console": 7}
TOP_LEVEL = {"__init__", "cli", "console", "fileutil", "termination", "verbosity"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The modules `path` imports when it runs (imports under `if TYPE_CHECKING:` aside)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree)
               if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
               for stmt in block.body for node in ast.walk(stmt)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def graph() -> dict[str, set[str]]:
    """Each idclab module -> the idclab modules it imports."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}
    edges = {}
    for name, path in modules.items():
        edges[name] = {m for m in runtime_imports(path) if m in modules and m != name and m != "idclab"}
    return edges


def layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dependencies_point_down_the_layers() -> None:
    upward = [f"{module} -> {other}" for module, imports in graph().items() for other in imports
              if layer(other) > layer(module)]
    assert upward == []


def test_packages_depend_on_each_other_one_way() -> None:
    packages = {}
    for module, imports in graph().items():
        packages.setdefault(module.split(".")[1], set()).update(
            other.split(".")[1] for other in imports if other.split(".")[1] != module.split(".")[1])
    assert cycles(packages) == []


def test_only_a_handful_of_modules_stay_at_the_top() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} == TOP_LEVEL
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == (
        set(LAYERS) - TOP_LEVEL)


@pytest.mark.parametrize("package, forbidden", [("models", "pytorch_lightning"), ("scoring", "pytorch_lightning"),
                                                ("data", "mlflow"), ("models", "mlflow"), ("scoring", "mlflow"),
                                                ("classifier", "mlflow"), ("config", "mlflow"),
                                                ("evaluation", "mlflow"), ("training", "mlflow")])
def test_layers_stay_out_of_what_is_not_theirs(package: str, forbidden: str) -> None:
    """Backbones and scoring know nothing of Lightning; only the tracking package talks to MLflow."""
    offenders = [str(p.relative_to(PACKAGE)) for p in (PACKAGE / package).rglob("*.py")
                 if any(m == forbidden or m.startswith(forbidden + ".") for m in runtime_imports(p))]
    assert offenders == []


@pytest.mark.parametrize("module", ["fit", "crossval", "trainer", "callbacks"])
def test_the_fit_stage_gets_its_plan_not_the_config(module: str) -> None:
    """Only the conductor (and `plan`, which reads it once) sees the run's whole config."""
    path = PACKAGE / "training" / f"{module}.py"
    assert not [m for m in runtime_imports(path) if m.startswith("omegaconf")]
    assert "DictConfig" not in path.read_text()
