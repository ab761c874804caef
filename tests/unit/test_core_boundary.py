"""`core/` knows nothing of Slack, HTTP frameworks or the adapters that call it.

Dependencies point one way, `bot -> core`. This walks every module under `core/` with `ast`
(nothing is imported, so a violation cannot hide behind an import error or a lazy import
inside a function) and fails on any import of a forbidden package.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
FORBIDDEN = ("slack_bolt", "slack_sdk", "fastapi", "starlette", "bot")


def _top_level(module: str) -> str:
    return module.split(".", 1)[0]


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """`line: module` for every forbidden import in the source, including dynamic ones."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            modules = [node.args[0].value]
        else:
            continue
        found += [(node.lineno, m) for m in modules if _top_level(m) in FORBIDDEN]
    return [f"{line}: {module}" for line, module in sorted(found)]


def test_the_walk_sees_the_core_modules() -> None:
    names = {p.relative_to(CORE).as_posix() for p in CORE.rglob("*.py")}
    assert {"settings.py", "wiring.py", "db/database.py", "schemas/agent.py"} <= names


def test_core_imports_no_slack_http_framework_or_adapter_code() -> None:
    violations = []
    for path in sorted(CORE.rglob("*.py")):
        for hit in forbidden_imports(path.read_text(encoding="utf-8"), str(path)):
            violations.append(f"core/{path.relative_to(CORE).as_posix()}:{hit}")
    assert violations == [], (
        "core/ must not depend on Slack, FastAPI/Starlette or bot/: move the code to bot/ "
        "or put a Protocol in core/ that bot/ implements"
    )


def test_the_check_catches_every_form_of_import() -> None:
    source = "\n".join(
        [
            "import fastapi",
            "from starlette.responses import JSONResponse",
            "import slack_sdk.web as web",
            "def lazy():",
            "    from slack_bolt.async_app import AsyncApp",
            "    return __import__('bot.server')",
            "import importlib",
            "importlib.import_module('fastapi.routing')",
            "from bot.api import deps",
        ]
    )
    assert forbidden_imports(source) == [
        "1: fastapi",
        "2: starlette.responses",
        "3: slack_sdk.web",
        "5: slack_bolt.async_app",
        "6: bot.server",
        "8: fastapi.routing",
        "9: bot.api",
    ]


def test_the_check_does_not_flag_lookalikes_or_relative_imports() -> None:
    source = "\n".join(
        [
            "import botocore",
            "import boto3",
            "from fastapi_utils import x",
            "from . import bot",
            "from .bot import thing",
            "from core.slack_sdk_free import y",
        ]
    )
    assert forbidden_imports(source) == []
