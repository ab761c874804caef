"""`Dockerfile`, `.dockerignore` and `deploy/compose.yaml` name only things that exist.

No container engine runs in CI, so nothing here builds the image (docs/operations.md says how
it was built once by hand). Instead every path, command, route and variable those files name
is checked against the repository: a renamed module, a removed subcommand or a misspelt
setting fails here rather than at someone's first `docker compose up`.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from bot.cli.main import app
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
#: Variables that are not ours but mean something to Python, pip, uv or the image itself.
FOREIGN_ENV = {
    "PATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "UV_LINK_MODE",
    "UV_COMPILE_BYTECODE",
}


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _setting_names() -> set[str]:
    return {field.alias or name for name, field in Settings.model_fields.items()}


def _cosmo_commands() -> set[tuple[str, ...]]:
    """Every `cosmo …` command path the CLI really has."""
    paths: set[tuple[str, ...]] = set()

    def walk(command: Any, prefix: tuple[str, ...]) -> None:
        paths.add(prefix)
        if hasattr(command, "commands"):  # a group (typer's, which is not click's class)
            for name, sub in command.commands.items():
                walk(sub, (*prefix, name))

    walk(typer.main.get_command(app), ())
    return paths


def _assert_cosmo_command(argv: list[str]) -> None:
    """`argv` runs `cosmo` with a subcommand that exists and options that it takes."""
    assert argv[0] == "cosmo", argv
    words = [w for w in argv[1:] if not w.startswith("-")]
    known = _cosmo_commands()
    path: tuple[str, ...] = ()
    for word in words:
        if (*path, word) not in known:
            break
        path = (*path, word)
    assert path, f"{argv}: no such cosmo command"
    command: Any = typer.main.get_command(app)
    for word in path:
        command = command.commands[word]
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for word in argv[1:]:
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"{argv}: {word} is not an option of {path}"


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        parts = Path(relative).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, bare) or bare == "**" for p in prefixes):
            ignored = not negate
    return ignored


# --- Dockerfile ---------------------------------------------------------------------------


def test_the_base_is_a_build_argument_and_the_build_has_two_stages() -> None:
    steps = _instructions()
    args = [rest for keyword, rest in steps if keyword == "ARG"]
    base = next(a for a in args if a.startswith("PYTHON_IMAGE="))
    assert "slim" in base
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert len(froms) >= 2 and all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    assert froms[0].endswith(" AS build")
    assert any("--from=build" in rest for keyword, rest in steps if keyword == "COPY")


def test_every_copied_source_exists_and_reaches_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [rest for keyword, rest in _instructions() if keyword == "COPY"]
    sources = [
        src for rest in copies if not rest.startswith("--from") for src in shlex.split(rest)[:-1]
    ]
    assert {"pyproject.toml", "uv.lock", "hatch_build.py", "core", "bot", "migrations"} <= set(
        sources
    )
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
        assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    # What the wheel needs at build time, and nothing private, is in the context.
    assert not _ignored("migrations/versions/0001_configuration.py", patterns)
    for private in (".env", ".cosmo/cosmo.db", ".venv/bin/python", ".git/config"):
        assert _ignored(private, patterns), private


def test_it_runs_as_an_unprivileged_user_serving_by_default_with_a_healthcheck() -> None:
    steps = _instructions()
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    cmd = next(rest for keyword, rest in reversed(steps) if keyword == "CMD")
    assert yaml.safe_load(cmd) == ["cosmo", "serve"]
    _assert_cosmo_command(yaml.safe_load(cmd))
    check = next(rest for keyword, rest in steps if keyword == "HEALTHCHECK")
    assert "/healthz" in check
    from bot.api.routes.health import router

    assert "/healthz" in {getattr(route, "path", "") for route in router.routes}


def test_the_commands_the_dockerfile_documents_exist() -> None:
    documented = re.findall(r"docker run cosmo-agents (cosmo [^\n#]+)", DOCKERFILE.read_text())
    assert len(documented) >= 3
    for line in documented:
        _assert_cosmo_command(shlex.split(line))


def test_every_environment_variable_it_sets_is_a_setting() -> None:
    names = set()
    for keyword, rest in _instructions():
        if keyword == "ENV":
            names |= {m for m in re.findall(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=", rest)}
    assert {"COSMO_HOST", "PORT", "COSMO_DATA_DIR"} <= names
    unknown = names - _setting_names() - FOREIGN_ENV
    assert not unknown, f"not settings: {sorted(unknown)}"


# --- deploy/compose.yaml ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_has_pgvector_a_one_shot_migration_http_and_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "serve", "worker"}
    assert "pgvector" in services["postgres"]["image"]
    assert services["migrate"]["command"] == ["cosmo", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["serve"]["command"] == ["cosmo", "serve", "--workers", "0"]
    assert services["worker"]["command"] == ["cosmo", "worker"]
    assert services["worker"]["healthcheck"] == {"disable": True}
    for role in ("serve", "worker"):
        assert services[role]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for role in ("migrate", "serve", "worker"):
        _assert_cosmo_command(services[role]["command"])


def test_compose_builds_this_dockerfile_and_names_real_settings(compose: dict[str, Any]) -> None:
    settings = _setting_names()
    for role in ("migrate", "serve", "worker"):
        service = compose["services"][role]
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        unknown = set(service["environment"]) - settings
        assert not unknown, f"{role}: not settings: {sorted(unknown)}"
        assert service["environment"]["KNOWLEDGE_PROVIDER"] in ("pgvector",)
        url = service["environment"]["DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
        # Replicas must share these; a generated one per container would not match.
        assert {"COSMO_API_TOKEN", "COSMO_SECRET_KEY"} <= set(service["environment"])
