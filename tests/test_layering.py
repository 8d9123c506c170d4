"""Imports point down only: service -> models -> kernels."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"kernels": {"models", "service", "flask"}, "models": {"service", "flask"}}


def root(module: str) -> str:
    """``numpy.linalg`` -> ``numpy``; ``statecast.models.spec`` -> ``models``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "statecast" and len(parts) > 1 else parts[0]


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(root(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(root(node.module))
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package):
    offenders = {str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
                 for path in (ROOT / package).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_kernels_do_no_io():
    """Numeric libraries only, and llvmlite (the vector products' IR and the host CPU's
    features, which reads no file)."""
    allowed = {"numpy", "numba", "math", "kernels", "__future__", "dataclasses", "typing",
               "time", "types", "collections", "threading", "llvmlite", "warnings"}
    used = set().union(*(imported_roots(p) for p in (ROOT / "kernels").rglob("*.py")))
    assert used <= allowed, used - allowed
