"""The layering of `overhop/`: imports run one way, down the table below.

Reads every module's imports (top level and inside functions) with `ast` and fails on an
arrow the table does not allow: storage never imports the broker, the broker never imports
the wire layer, the model imports nothing of ours but the errors. docs/architecture.md
draws the same table.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "overhop"

# Each part of `overhop`, and the parts it may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "clock": frozenset(),
    "logs": frozenset(),
    "gc_tuning": frozenset(),
    "model": frozenset({"errors"}),
    "config": frozenset({"errors"}),
    "auth": frozenset({"errors", "model", "config"}),
    "wire": frozenset({"errors", "clock"}),
    "session": frozenset({"errors", "wire"}),
    "observability": frozenset(),
    "storage": frozenset({"errors", "clock", "logs", "gc_tuning", "model", "config",
                         "observability", "auth"}),
    "broker": frozenset({"errors", "clock", "logs", "model", "config", "storage",
                         "observability", "auth"}),
    "http": frozenset({"errors", "clock", "logs", "model", "config", "storage", "broker",
                       "observability", "__init__"}),
    "cluster": frozenset({"errors", "clock", "logs", "model", "config", "storage", "broker"}),
    "server": frozenset({"errors", "clock", "logs", "gc_tuning", "model", "config", "wire",
                         "session", "storage", "broker", "observability", "http", "auth",
                         "cluster", "__init__"}),
    "cli": frozenset({"errors", "clock", "logs", "config", "model", "server", "__init__"}),
    "__main__": frozenset({"cli"}),
    "__init__": frozenset(),
}


def _part(module: str) -> str | None:
    """`overhop.storage.store` -> `storage`; None for a module outside `overhop`."""
    names = module.split(".")
    if names[0] != "overhop":
        return None
    return names[1] if len(names) > 1 else "__init__"


def _is_part(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(("overhop", *path.relative_to(PACKAGE).parent.parts))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "overhop":  # `from overhop import x`: x is a part, or a name of ours
                found += [(node.lineno, f"overhop.{alias.name}" if _is_part(alias.name)
                           else "overhop") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _backward_arrows() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        source = relative.parts[0].removesuffix(".py")
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == source:
                continue
            if target not in ALLOWED.get(source, frozenset()):
                wrong.append(f"overhop/{relative}:{line} imports {module} ({source} -> {target})")
    return wrong


def test_every_part_is_in_the_table() -> None:
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
             if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts == set(ALLOWED)


def test_imports_run_one_way() -> None:
    assert _backward_arrows() == []


def test_the_table_has_no_cycle() -> None:
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(part: str, path: tuple[str, ...]) -> None:
        if seen.get(part) == 1:
            pytest.fail(f"cycle: {' -> '.join((*path, part))}")
        if seen.get(part) == 2:
            return
        seen[part] = 1
        for target in ALLOWED[part]:
            visit(target, (*path, part))
        seen[part] = 2

    for part in ALLOWED:
        visit(part, ())


def test_the_checker_sees_a_backward_arrow(tmp_path: Path) -> None:
    """The reader finds imports inside functions and relative ones (so the test can fail)."""
    module = tmp_path / "overhop" / "storage" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..broker import service\n    import overhop.wire.codec\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "overhop"
    try:
        assert [m for _, m in _imports(module)] == ["overhop.broker", "overhop.wire.codec"]
    finally:
        PACKAGE = saved
