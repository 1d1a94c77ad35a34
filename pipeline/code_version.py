"""Code versions: a digest of the source of a module and of every avvp module it imports.

A stage's key (DESIGN.md, fingerprints) holds the version of that stage's code, so that
a changed stage never reuses what its old code made, while a change elsewhere (the
command line, the report's page, the plots) leaves its key alone. The version of a
module is the digest of the sources in its import closure within the avvp package,
found by reading their `import` statements (the standard library's `modulefinder`
would also walk torch and every other dependency, and read code it never needs).
Imports under `if TYPE_CHECKING:` are not followed: they never run. A module's own
data files, beside it under its name (`viewer.js` and `viewer.css` of `viewer.py`),
count as its source.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

from .. import __version__

PACKAGE = "avvp"


@functools.cache
def code_version(*modules: str, package: Path | None = None) -> str:
    """12 hex digits of the avvp version and the sources every module of `modules`
    imports, directly or not, within the package (`package`: its folder, default the
    installed one). Raises ValueError for a module that is not in the package."""
    # The package's folder: the one above this module's room.
    folder = Path(__file__).resolve().parent.parent if package is None else package
    digest = hashlib.sha256(__version__.encode())
    closure = import_closure(modules, folder)
    assets = {
        asset
        for path in closure
        for asset in path.parent.glob(f"{path.stem}.*")
        if asset.suffix not in (".py", ".pyc") and asset.is_file()
    }
    for path in sorted(closure | assets):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def import_closure(modules: tuple[str, ...] | list[str], folder: Path) -> set[Path]:
    """The source files of `modules`, their packages' `__init__` files and, repeatedly,
    of every avvp module they import."""
    files: set[Path] = set()
    pending = list(modules)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, folder)
        if path is None:
            if name in modules:
                raise ValueError(f"{name} is not a module of the {PACKAGE} package in {folder}")
            continue  # `from avvp.x import name`: a name, not a module
        files.add(path)
        # Importing a.b.c runs the __init__ of a and of a.b first.
        parts = name.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]
        pending += imported_modules(path, name)
    return files


def module_file(name: str, folder: Path) -> Path | None:
    """The file of module `avvp.<...>` under the package folder, or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = folder.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, name: str) -> Iterator[str]:
    """Every module `path` (module `name`) may import: `import a.b`, and for `from a
    import b` both `a` and `a.b` (b may be a module or a name in a)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _executed_nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{parent}.{node.module}" if node.module else parent


def _executed_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes of `tree` outside `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
