"""One-shot `cosmo` commands in real processes without paying Python's start-up for each.

Starting `python -m bot.cli` costs seconds of CPU before a command runs (the interpreter,
then SQLAlchemy, pydantic, numpy, rich…), and the CLI tests run about a hundred commands.
A zygote process imports `bot.cli.main` once and, per command, forks a child that sets the
command's environment, working directory, argv and standard streams, runs `main()` and
exits with its exit code. Each command still runs in its own process, as an operator's
would: its own environment and directory, its own module state, its exit code, its output
on file descriptors 1 and 2, `atexit` handlers run at the end.

What a child cannot change is what the zygote did at import: the module-level rich consoles
read NO_COLOR, COLUMNS, TERM and such then. So a zygote serves only the environment it
started with, apart from the variables the service reads at run time (its settings and
PYTEST_CURRENT_TEST); any other difference starts another zygote.

Run as `python -m tests.cosmo_zygote`: requests and replies are JSON lines on stdin/stdout.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from core.secret_names import parse_patterns

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "bot" / "cli" / "__main__.py"

#: What nearly every command imports only once it runs, besides `bot.cli.main`: the schema
#: check and the migrations (alembic, and the Slack tables a migration reads), the database
#: drivers, the HTTP client stack. Imported in the zygote, a child starts with them (about a
#: second less per command); none of them reads a setting at import or starts a thread.
WARM = (
    "alembic.command",
    "alembic.runtime.migration",
    "alembic.script",
    "bot.slack.oauth_tables",
    "certifi",
    "configparser",
    "httpcore",
    "httpx",
    "markupsafe",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.ext.asyncio",
    "sqlite3",
    "tomllib",
)


# -- the zygote ----------------------------------------------------------------------


def _serve() -> None:
    # The protocol keeps its own descriptors; 0 and 1 go to /dev/null so nothing imported
    # can write into the replies, and children get theirs from the request.
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)

    import importlib

    import bot.cli.main  # noqa: F401  (the import the children share)

    for name in WARM:
        importlib.import_module(name)

    # Forking a process with threads would copy locks held by threads that do not exist in
    # the child: the zygote must have none.
    assert threading.active_count() == 1, threading.enumerate()
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            _child(request)  # never returns
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


def _child(request: dict[str, Any]) -> None:
    code: int = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in (
            (0, request["stdin"], os.O_RDONLY),
            (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
            (2, request["stderr"], os.O_WRONLY | os.O_TRUNC),
        ):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        # A fresh interpreter seeds its generators from the OS; forked ones would repeat.
        import random

        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        # What click reads to name the program in usage lines: `python -m bot.cli`.
        sys.argv = [str(MAIN), *request["args"]]
        main_module = sys.modules["__main__"]
        main_module.__package__ = "bot.cli"
        signal.signal(signal.SIGINT, signal.default_int_handler)

        from bot.cli.main import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# -- the test side -------------------------------------------------------------------

#: Variables that never reach import-time code: the service reads them when a command runs,
#: as it reads the skill credentials `COSMO_SKILL_SECRETS` names (CRM_TOKEN…).
_RUNTIME_PREFIXES = ("COSMO_", "DATABASE_", "ANTHROPIC_", "SLACK_", "AWS_", "KNOWLEDGE_")
_RUNTIME_NAMES = {"PYTEST_CURRENT_TEST", "PORT"}


def _import_key(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    secrets = parse_patterns(env.get("COSMO_SKILL_SECRETS", ""))
    return tuple(
        sorted(
            (k, v)
            for k, v in env.items()
            if k not in _RUNTIME_NAMES
            and not k.startswith(_RUNTIME_PREFIXES)
            and not any(fnmatchcase(k, pattern) for pattern in secrets)
        )
    )


class Zygote:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cosmo_zygote"],
            env=dict(env),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _reply(self, timeout: float | None) -> dict[str, Any] | None:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return None
        line = self.process.stdout.readline()
        assert line, f"the cosmo zygote exited ({self.process.poll()})"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def run(
        self,
        args: list[str],
        env: Mapping[str, str],
        cwd: Path,
        timeout: float,
        input: str | None,
    ) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="cosmo-run-") as folder:
            files = {name: Path(folder) / name for name in ("stdin", "stdout", "stderr")}
            files["stdin"].write_text(input or "")
            files["stdout"].touch()
            files["stderr"].touch()
            request = {
                "args": args,
                "env": dict(env),
                "cwd": str(cwd),
                **{name: str(path) for name, path in files.items()},
            }
            with self.lock:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                started = self._reply(60)
                assert started is not None, "the cosmo zygote did not fork"
                done = self._reply(timeout)
                if done is None:
                    os.kill(started["pid"], signal.SIGKILL)
                    self._reply(None)
                    raise subprocess.TimeoutExpired([*_COSMO, *args], timeout)
            return subprocess.CompletedProcess(
                [*_COSMO, *args],
                done["returncode"],
                files["stdout"].read_text(),
                files["stderr"].read_text(),
            )

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_COSMO = [sys.executable, "-m", "bot.cli"]
_zygotes: dict[tuple[tuple[str, str], ...], Zygote] = {}
_zygotes_lock = threading.Lock()


def run_cosmo(
    env: Mapping[str, str],
    args: list[str],
    *,
    cwd: Path = ROOT,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Like `subprocess.run([python, -m, bot.cli, *args], capture_output=True, text=True)`:
    a new process per command, forked from a zygote that has the imports done."""
    key = _import_key(env)
    with _zygotes_lock:
        zygote = _zygotes.get(key)
        if zygote is None or zygote.process.poll() is not None:
            if not _zygotes:
                atexit.register(close_all)
            zygote = _zygotes[key] = Zygote(env)
    return zygote.run(args, env, cwd, timeout, input)


def close_all() -> None:
    with _zygotes_lock:
        for zygote in _zygotes.values():
            zygote.close()
        _zygotes.clear()


if __name__ == "__main__":
    _serve()
