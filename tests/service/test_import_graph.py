"""The modules of statecast.service import each other without a cycle, counting every
import statement: at module level and inside functions (a cycle hidden in a function is
still a cycle, only a later one)."""

import ast
from pathlib import Path

import statecast.service

PACKAGE = "statecast.service"
ROOT = Path(statecast.service.__path__[0])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def imported(name: str, path: Path) -> set[str]:
    """The statecast.service modules ``path`` imports anywhere in it: ``from a.b import c``
    counts as ``a.b.c`` when that is a module, else as ``a.b``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in MODULES)
    found.discard(name)
    return found


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the list of its modules, or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        trail.append(node)
        for following in sorted(graph[node]):
            if state.get(following) == "open":
                return [*trail[trail.index(following):], following]
            if following not in state:
                cycle = visit(following)
                if cycle:
                    return cycle
        state[node] = "done"
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_module_and_function_level_imports():
    assert "statecast.service.runtime" in GRAPH["statecast.service.app"]
    assert "statecast.service.runtime" in GRAPH["statecast.service.kserve"]
    assert "statecast.service.runtime" in GRAPH["statecast.service.admin_api"]
    # gunicorn_conf imports the start-up hooks inside post_worker_init only.
    assert "statecast.service.startup" in GRAPH["statecast.service.gunicorn_conf"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_service_modules_import_each_other_without_a_cycle():
    assert find_cycle(GRAPH) is None


def test_the_blueprints_reach_the_runtime_without_the_app():
    for blueprint in ("kserve", "admin_api", "runtime", "paths"):
        assert "statecast.service.app" not in GRAPH[f"statecast.service.{blueprint}"]
