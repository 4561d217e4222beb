"""The package's rooms and the rule between them, read from the source: every import of model_selector
(at module level or inside a function) must go from a room to one it may depend on, and no two
modules may import each other, however indirectly."""

from __future__ import annotations

import ast
from pathlib import Path

import model_selector

PACKAGE = Path(model_selector.__file__).parent
# room -> the rooms its modules may import (besides their own). core is what the Triton python
# models import; build never imports serve or measure; only cli sees everything.
MAY_IMPORT = {
    "core": set(),
    "data": {"core"},
    "build": {"core", "data"},
    "serve": {"core"},
    "compat": {"core", "data", "build"},
    "measure": {"core", "data", "build", "serve"},
    "triton_models": {"core"},
    "cli": {"core", "data", "build", "serve", "compat", "measure"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every model_selector import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; write model_selector.<room>..."
            if node.module and node.module.split(".")[0] == "model_selector":
                # `from model_selector.core import layout` imports the module model_selector.core.layout
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file()
                    found.append((node.lineno, candidate if is_module else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "model_selector"]
    return found


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_lives_in_a_room():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the rooms {sorted(MAY_IMPORT)}: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} >= set(MAY_IMPORT)


def violations(path: Path, module: str) -> list[str]:
    own, broken = room(module), []
    for line, target in imports(path):
        other = room(target)
        if other is None:
            if target != "model_selector":
                broken.append(f"{module}:{line} imports {target}")
        elif other != own and other not in MAY_IMPORT[own]:
            broken.append(f"{module}:{line}: {own} imports {target}")
    return broken


def test_rooms_import_only_the_rooms_below_them():
    broken = [v for path in sources() for v in violations(path, module_name(path))]
    assert not broken, "\n".join(broken)


def test_no_import_cycles_between_modules():
    graph = {module_name(p): {t for _, t in imports(p)} - {module_name(p)} for p in sources()}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_rule_catches_a_wrong_way_import(tmp_path):
    """The checker itself: a function-level import from build into serve is reported, a core one is not."""
    probe = tmp_path / "probe.py"
    probe.write_text("from model_selector.core import layout\n\n\ndef f():\n"
                     "    from model_selector.serve.client import RouterClient\n")
    assert imports(probe) == [(1, "model_selector.core.layout"), (5, "model_selector.serve.client")]
    assert violations(probe, "model_selector.build.probe") == [
        "model_selector.build.probe:5: build imports model_selector.serve.client"]
