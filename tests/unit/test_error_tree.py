"""The error tree at the top of `core/errors.py` is true: every exception class defined in
`core/` stands in it once, under a class it derives from, with the module it lives in.

Like the boundary test, this reads `core/` with `ast`: nothing is imported, so a module
whose optional dependency is missing still counts.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
#: A tree line: indentation, the class name, then its module when it is not the default.
LINE = re.compile(r"^(?P<indent> +)(?P<name>[A-Za-z_]\w*)(?:\s+(?P<module>[a-z_]\w*(?:\.\w+)+))?")
BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


@dataclass(frozen=True)
class Entry:
    depth: int
    name: str
    module: str


def exception_classes(root: Path, package: str) -> dict[str, tuple[str, set[str]]]:
    """Class name -> (module, names of its bases), for every class under `root` that
    derives, through classes defined there, from a built-in exception."""
    classes: list[tuple[str, str, set[str]]] = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join((package, *parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = {
                    b.id if isinstance(b, ast.Name) else b.attr
                    for b in node.bases
                    if isinstance(b, ast.Name | ast.Attribute)
                }
                classes.append((node.name, module, bases))
    found: dict[str, tuple[str, set[str]]] = {}
    grew = True
    while grew:
        grew = False
        for name, module, bases in classes:
            if name not in found and bases & (BUILTIN_EXCEPTIONS | set(found)):
                assert name not in BUILTIN_EXCEPTIONS, f"{module}.{name} shadows a built-in"
                found[name] = (module, bases)
                grew = True
    return found


def tree_of(docstring: str, *, default_module: str) -> list[Entry]:
    """The indented tree in `docstring`, one entry a line (four spaces a level)."""
    entries = []
    for line in docstring.splitlines():
        match = LINE.match(line)
        if match and len(match["indent"]) >= 4:
            depth, uneven = divmod(len(match["indent"]) - 4, 4)
            assert not uneven, f"tree line indented off the four-space grid: {line!r}"
            entries.append(Entry(depth, match["name"], match["module"] or default_module))
    return entries


def tree_problems(entries: list[Entry], classes: dict[str, tuple[str, set[str]]]) -> list[str]:
    problems: list[str] = []
    parents: list[str] = []  # the open branch: the entry at each depth above this one
    seen: set[str] = set()
    for entry in entries:
        parents = parents[: entry.depth]
        if len(parents) != entry.depth:
            problems.append(f"{entry.name}: indented deeper than its parent")
            continue
        parents.append(entry.name)
        if entry.depth == 0:
            if entry.name not in BUILTIN_EXCEPTIONS:
                problems.append(f"{entry.name}: a root of the tree must be a built-in exception")
            continue
        if entry.name in seen:
            problems.append(f"{entry.name}: in the tree twice")
        seen.add(entry.name)
        if entry.name not in classes:
            problems.append(f"{entry.name}: no exception class of that name is defined")
            continue
        module, bases = classes[entry.name]
        if module != entry.module:
            problems.append(f"{entry.name}: the tree says {entry.module}, it lives in {module}")
        if parents[-2] not in bases:
            problems.append(
                f"{entry.name}: under {parents[-2]} in the tree, derives from "
                f"{', '.join(sorted(bases))}"
            )
    problems += [
        f"{name} ({module}): missing from the tree"
        for name, (module, _) in classes.items()
        if name not in seen
    ]
    return problems


def test_the_error_tree_names_every_exception_class_of_core_where_it_lives() -> None:
    docstring = ast.get_docstring(ast.parse((CORE / "errors.py").read_text(encoding="utf-8")))
    assert docstring is not None
    classes = exception_classes(CORE, "core")
    entries = tree_of(docstring, default_module="core.errors")

    assert {"CosmoError", "ValidationFailed", "SkillFailed", "ApprovalsMoved"} <= set(classes)
    assert tree_problems(entries, classes) == []


def test_the_check_reports_a_missing_class_a_wrong_parent_and_a_wrong_module(
    tmp_path: Path,
) -> None:
    (tmp_path / "errors.py").write_text("class Base(Exception): ...\nclass Child(Base): ...\n")
    (tmp_path / "far.py").write_text(
        "from pkg.errors import Base\nclass Far(Base): ...\nclass Lone(KeyError): ...\n"
    )
    tree = """A tree with three mistakes.

    Exception
        Base
        Child
        Far                 pkg.near
    """
    classes = exception_classes(tmp_path, "pkg")
    entries = tree_of(tree, default_module="pkg.errors")

    assert set(classes) == {"Base", "Child", "Far", "Lone"}
    assert tree_problems(entries, classes) == [
        "Child: under Exception in the tree, derives from Base",
        "Far: the tree says pkg.near, it lives in pkg.far",
        "Far: under Exception in the tree, derives from Base",
        "Lone (pkg.far): missing from the tree",
    ]
