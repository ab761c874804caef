"""Every `cosmo …` command our messages, errors and docs tell people to run exists.

User-facing strings are the string literals in `bot/` and `core/` (docstrings are for
developers and are skipped) and the Markdown in README and `docs/`. Each `cosmo WORD…` found
is walked down the real CLI: a group's next word must be one of its commands.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer

from bot.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
MENTION = re.compile(r"\bcosmo((?: [a-z][a-z0-9-]*)+)")
# Words that may follow a group's name in prose ("`cosmo kb` for knowledge bases").
PROSE = {"and", "or", "for", "to", "with", "commands", "command", "group", "subcommands"}


def user_facing_strings() -> Iterator[tuple[str, str]]:
    for package in ("bot", "core"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                )
                and node.body
                and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                ):
                    yield f"{path.relative_to(ROOT)}:{node.lineno}", node.value
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            yield f"{path.relative_to(ROOT)}:{number}", line


def mentions() -> list[tuple[str, list[str]]]:
    found = []
    for where, text in user_facing_strings():
        for match in MENTION.finditer(text):
            found.append((where, match.group(1).split()))
    return found


@cache
def _root() -> Any:
    return typer.main.get_command(app)


def unknown_command(words: list[str]) -> str | None:
    """The first word that names no command, walking from the root; None if all do."""
    # Duck-typed: typer builds its commands from its own copy of click.
    command: Any = _root()
    for word in words:
        if not hasattr(command, "commands"):
            return None  # a command's arguments, or prose after it
        sub = command.commands.get(word)
        if sub is None:
            return None if word in PROSE and command.name != "cosmo" else word
        command = sub
    return None


def test_the_scan_finds_the_commands_we_know_are_mentioned() -> None:
    named = {" ".join(words[:2]) for _, words in mentions()}
    assert {"db upgrade", "audit verify", "keys create"} <= named


@pytest.mark.parametrize(("where", "words"), mentions(), ids=lambda v: str(v)[:60])
def test_every_cosmo_command_mentioned_exists(where: str, words: list[str]) -> None:
    bad = unknown_command(words)
    assert bad is None, f"{where}: `cosmo {' '.join(words)}` — no command `{bad}` there"


def test_a_made_up_command_is_caught() -> None:
    assert unknown_command(["agents", "import"]) == "import"
    assert unknown_command(["kb", "ingest", "docs/"]) is None
