"""The package's layers only import downward: every `pivot` import of every module (also
those inside functions and under TYPE_CHECKING) is checked against the order below."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pivot"

# Lowest first. A module may import modules of its own layer and of the layers below it.
LAYERS = [
    (
        "leaf helpers",
        {
            "pivot.errors",
            "pivot._fs",
            "pivot._gcpause",
            "pivot._helper_procs",
            "pivot._racy",
            "pivot._swept",
            "pivot.untrusted",
            "pivot.project",
            "pivot.config",
            "pivot.urls",
            "pivot.gitignore",
        },
    ),
    ("cache", {"pivot.cache"}),
    ("remote", {"pivot.remote"}),
    ("fingerprint", {"pivot.fingerprint"}),
    ("define", {"pivot.define"}),
    ("discover", {"pivot.discover"}),
    ("run", {"pivot.run"}),
    ("watch, results", {"pivot.watch", "pivot.results"}),
    ("services", {"pivot.services"}),
    ("cli", {"pivot.cli"}),
]
# Edges the order alone would allow but the design forbids.
FORBIDDEN = {
    "pivot.remote": {"pivot.config"},  # the caller opens a remote from its config
    "pivot.cache": {"pivot.config"},
}
ENTRY_POINTS = {"pivot", "pivot.__main__"}  # the public face and `python -m pivot`
# Run as `python -m` by a cluster worker (its stdout is a pipe to the worker and its
# children's are the stage's log) or by a pull (a pipe to the pulling process), never
# the user's terminal.
WORKER_PROGRAMS = {"pivot.run.stage_process", "pivot.cache.tree_writer"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "pivot" or name.startswith("pivot.")}


def _layer(name: str) -> tuple[int, str] | None:
    """The rank and prefix of the layer that owns module `name` (None: not a module)."""
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return rank, prefix
    return None


def test_every_module_belongs_to_a_layer() -> None:
    modules = [_module_name(p) for p in sorted(PACKAGE.rglob("*.py"))]
    lost = [m for m in modules if m not in ENTRY_POINTS and _layer(m) is None]
    assert lost == [], f"modules in no layer: {lost}; add them to LAYERS"


def _prints(path: pathlib.Path) -> list[str]:
    """Where module `path` writes to the terminal itself: print(), sys.stdout/stderr, click."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "print":
                found.append(f"print() at line {node.lineno}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "sys" and node.attr in ("stdout", "stderr"):
                found.append(f"sys.{node.attr} at line {node.lineno}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if "click" in names or getattr(node, "module", None) == "click":
                found.append(f"imports click at line {node.lineno}")
    return found


def test_only_the_cli_prints() -> None:
    """Below the CLI, warnings go to the `pivot` logger and errors are raised: what the
    user sees is rendered in one place."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module in ENTRY_POINTS | WORKER_PROGRAMS or module.split(".")[:2] == ["pivot", "cli"]:
            continue
        wrong.extend(f"{module}: {where}" for where in _prints(path))
    assert wrong == [], "modules below the CLI that print:\n" + "\n".join(wrong)


def test_layers_only_import_downward() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module in ENTRY_POINTS:
            continue
        rank, prefix = _layer(module)
        for imported in sorted(_imports(path, module)):
            target = _layer(imported)
            if target is None:  # `from pivot.cache import objects` also names the package
                continue
            target_rank, target_prefix = target
            if target_rank > rank or target_prefix in FORBIDDEN.get(prefix, set()):
                wrong.append(f"{module} imports {imported} ({LAYERS[target_rank][0]})")
    assert wrong == [], "imports that go up or across the layers:\n" + "\n".join(wrong)


def test_no_module_imports_another_modules_private_names() -> None:
    """`from pivot.x import _y` only for a module `_y` (a leaf helper such as `pivot._fs`),
    never for a private function, class or constant of another module: what one module
    needs from another is part of that module's public, documented API."""
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if not node.module.startswith("pivot"):
                continue
            for alias in node.names:
                name = alias.name
                private = name.startswith("_") and not name.startswith("__")
                if private and f"{node.module}.{name}" not in modules:
                    wrong.append(f"{module}:{node.lineno} imports {name} from {node.module}")
    assert wrong == [], "private names imported across modules:\n" + "\n".join(wrong)
