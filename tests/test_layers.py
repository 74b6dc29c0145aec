"""The dependency rule between the project's layers, read from the source's import statements (function-level
imports included): a layer imports only the layers below it, so there are no cycles and the architecture can be read
from the folders. docs/design.md states the rule."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A layer may import itself and any layer listed before it.
LAYERS = [
    "benchmark.core",
    "models",
    "benchmark.store",
    "benchmark.data",
    "benchmark.training",
    "attacks|defenses",
    "benchmark.engine",
    "benchmark.report",
    "benchmark.api",
    "benchmark.cli",
    "benchmark.perf",  # benchmarks time the CLI too; `bench perf` is loaded by name (benchmark.cli.COMMANDS)
]
# attacks and defenses share a level but each imports only the core, models and training layers (and itself)
PEERS_APART = {"attacks", "defenses"}


def layer_of(module: str) -> str | None:
    for layer in LAYERS:
        for prefix in layer.split("|"):
            if module == prefix or module.startswith(prefix + "."):
                return prefix
    return None


def rank(layer: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if layer in names.split("|"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]  # `from pkg import module`
    return found


def project_files() -> list[Path]:
    return sorted(p for d in ("benchmark", "models", "attacks", "defenses") for p in (ROOT / d).rglob("*.py"))


def violations_of(path: Path, module: str) -> list[str]:
    own = layer_of(module)
    if own is None:  # benchmark/__init__.py, the public face: re-exports lazily from every layer
        return []
    found = []
    for line, target in imports_of(path, module):
        other = layer_of(target)
        if other is None or other == own:
            continue
        apart = own in PEERS_APART and other in PEERS_APART
        if rank(other) > rank(own) or apart:
            found.append(f"{module}:{line} ({own}) imports {target} ({other})")
    return found


def violations() -> list[str]:
    return sorted({v for path in project_files() for v in violations_of(path, module_name(path))})


def test_every_module_belongs_to_a_layer():
    loose = [str(p.relative_to(ROOT)) for p in project_files()
             if layer_of(module_name(p)) is None and p.relative_to(ROOT).as_posix() != "benchmark/__init__.py"]
    assert loose == [], f"modules outside every layer (put them in a subpackage): {loose}"


def test_layers_import_only_downwards():
    assert violations() == []


@pytest.mark.parametrize("module, source, expected", [
    ("benchmark.core.probe", "from benchmark.cli.run import run\n", "benchmark.cli"),
    ("benchmark.core.probe", "from ..engine import cells\n", "benchmark.engine"),
    ("attacks.probe", "import defenses.pixeldefend\n", "defenses"),
])
def test_the_checker_sees_an_upward_import(tmp_path, module, source, expected):
    """A core module importing the CLI or the engine, or an attack importing a defense, is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert [v for v in violations_of(probe, module) if f"({expected})" in v]
