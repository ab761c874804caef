"""MCP skills against a real MCP server (tests/fakes/mcp_server.py), over stdio and HTTP.

Starting a stdio server costs about a second, so the module shares one event loop and one
pool (and with it one server process) across tests; the reconnection test uses a server of
its own, because it kills it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx
import pytest
import pytest_asyncio
import uvicorn

from core.schemas.skill import McpExecutor, SkillSpec
from core.skills.builtins import BuiltinCatalog
from core.skills.factory import SkillFactory
from core.skills.mcp_executor import McpPool
from core.skills.mcp_servers import McpServerConfig
from core.skills.runtime import Skill, SkillContext, SkillFailed, SkillUnusable
from tests.fakes.mcp_server import build_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAKE_SERVER = str(Path(__file__).resolve().parents[1] / "fakes" / "mcp_server.py")
# The operator's COSMO_MCP_SERVERS, as the composition root loads it.
SERVERS = {
    "fake": McpServerConfig(command=[sys.executable, FAKE_SERVER]),
    "fake-with-token": McpServerConfig(
        command=[sys.executable, FAKE_SERVER], env={"FAKE_TOKEN": "${TEST_MCP_TOKEN}"}
    ),
    "missing": McpServerConfig(command=["/nonexistent/mcp-server"]),
}
STDIO = McpExecutor(server="fake")
CTX = SkillContext(
    tenant_id="t1",
    agent_id="agt_1",
    agent_name="sales-bot",
    session_id="ses_1",
    user_id="U1",
    user_name="Ada",
)
OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def spec(name: str, executor: McpExecutor, schema: dict[str, Any] | None = None) -> SkillSpec:
    return SkillSpec(
        name=name,
        description=f"The {name} tool.",
        input_schema=schema or OBJECT,
        executor=executor,
    )


def skill(
    pool: McpPool, name: str, executor: McpExecutor = STDIO, tool: str | None = None
) -> Skill:
    factory = SkillFactory(BuiltinCatalog.default(), httpx.AsyncClient(), os.environ.get, pool)
    return factory.build(spec(name, executor.model_copy(update={"tool": tool or name})))


@pytest.fixture(scope="module")
def errlog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextIO]:
    with open(tmp_path_factory.mktemp("mcp") / "server-stderr.log", "w") as f:
        yield f


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool(errlog: TextIO) -> AsyncIterator[McpPool]:
    p = McpPool(servers=SERVERS, errlog=errlog)
    yield p
    await p.aclose()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """The fake server on streamable HTTP, served by uvicorn in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_server().streamable_http_app(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the MCP HTTP server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(10)
    sock.close()


# --- stdio --------------------------------------------------------------------------------


async def test_calls_over_stdio_reuse_one_server_process(pool: McpPool) -> None:
    whoami = skill(pool, "whoami")
    first = await whoami.execute({}, CTX)
    second = await whoami.execute({}, CTX)
    third = await whoami.execute({}, CTX)

    pids = {r.data["pid"] for r in (first, second, third)}
    assert len(pids) == 1 and os.getpid() not in pids  # one process, and not ours
    assert [r.data["calls"] for r in (second, third)] == [
        first.data["calls"] + 1,
        first.data["calls"] + 2,
    ]
    assert pool.connections_opened == 1


async def test_a_typed_result_gives_text_and_structured_data(pool: McpPool) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    factory = SkillFactory(BuiltinCatalog.default(), httpx.AsyncClient(), os.environ.get, pool)
    add = factory.build(spec("add", STDIO.model_copy(update={"tool": "add"}), schema))

    result = await add.execute({"a": 2, "b": 40}, CTX)

    assert (result.content, result.data, result.is_error) == ("42", {"result": 42}, False)


async def test_a_tool_error_is_an_error_result_the_model_can_read(pool: McpPool) -> None:
    lookup = skill(pool, "lookup_contact")

    found = await lookup.execute({"email": "ada@example.com"}, CTX)
    missing = await lookup.execute({"email": "bob@example.com"}, CTX)

    assert not found.is_error and "Ada Lovelace" in found.content
    assert missing.is_error
    assert "no contact with the address bob@example.com" in missing.content


async def test_concurrent_calls_share_the_connection(pool: McpPool) -> None:
    add = skill(pool, "add")
    opened = pool.connections_opened

    results = await asyncio.gather(*(add.execute({"a": i, "b": 1}, CTX) for i in range(12)))

    assert [r.data["result"] for r in results] == [i + 1 for i in range(12)]
    assert pool.connections_opened == opened


async def test_a_slow_tool_times_out_and_the_connection_stays_usable(pool: McpPool) -> None:
    slow = skill(pool, "sleep", STDIO.model_copy(update={"timeout_seconds": 0.3}))
    await skill(pool, "add").execute({"a": 0, "b": 0}, CTX)  # the connection, even run alone
    opened = pool.connections_opened

    started = time.monotonic()
    with pytest.raises(SkillFailed, match=r"sleep timed out after 0\.3 s"):
        await slow.execute({"seconds": 5}, CTX)
    assert time.monotonic() - started < 4  # the tool itself would take 5 s

    assert (await skill(pool, "add").execute({"a": 1, "b": 1}, CTX)).data == {"result": 2}
    assert pool.connections_opened == opened


async def test_a_skill_calls_the_tool_its_executor_names(pool: McpPool) -> None:
    weather = skill(pool, "get_weather", tool="getWeather")
    assert (await weather.execute({"city": "Paris"}, CTX)).content == "Sunny in Paris"


async def test_a_missing_command_fails_clearly(pool: McpPool) -> None:
    broken = McpExecutor(server="missing")
    with pytest.raises(SkillFailed, match=r"`missing` \(stdio\).*command not found"):
        await skill(pool, "add", broken).execute({}, CTX)


async def test_a_server_the_operator_did_not_configure_cannot_be_built(pool: McpPool) -> None:
    with pytest.raises(SkillUnusable, match=r"no MCP server named 'apollo'.*fake, fake-with"):
        skill(pool, "add", McpExecutor(server="apollo"))


async def test_env_comes_from_secrets_and_a_missing_one_is_named(errlog: TextIO) -> None:
    server = McpExecutor(server="fake-with-token")
    without = McpPool(servers=SERVERS, secrets=lambda name: None, errlog=errlog)
    with pytest.raises(SkillFailed, match=r"TEST_MCP_TOKEN, which is not set"):
        await skill(without, "read_env", server).execute({"name": "FAKE_TOKEN"}, CTX)
    assert without.connections_opened == 0
    await without.aclose()

    secrets = {"TEST_MCP_TOKEN": "tok-123"}
    pool = McpPool(servers=SERVERS, secrets=secrets.get, errlog=errlog)
    try:
        result = await skill(pool, "read_env", server).execute({"name": "FAKE_TOKEN"}, CTX)
        assert result.content == "tok-123"
        # Only what is declared crosses over: not the rest of our environment.
        leaked = await skill(pool, "read_env", server).execute({"name": "PYTEST_VERSION"}, CTX)
        assert leaked.content == "(unset)"
    finally:
        await pool.aclose()


async def test_a_dead_server_is_replaced(errlog: TextIO) -> None:
    pool = McpPool(servers=SERVERS, errlog=errlog)
    whoami, crash = skill(pool, "whoami"), skill(pool, "crash")
    try:
        first = (await whoami.execute({}, CTX)).data["pid"]

        # Dies during a call: that call fails (it may have acted), the next one reconnects.
        with pytest.raises(SkillFailed, match="may or may not have run"):
            await crash.execute({}, CTX)
        second = (await whoami.execute({}, CTX)).data["pid"]
        assert second != first

        # Dies between calls: noticed before the next call, which then just works.
        os.kill(second, signal.SIGKILL)
        await asyncio.sleep(0.5)
        third = (await whoami.execute({}, CTX)).data["pid"]
        assert third not in (first, second)
        assert pool.connections_opened == 3
    finally:
        await pool.aclose()
    with pytest.raises(ProcessLookupError):
        os.kill(third, 0)  # closing the pool stopped the server


# --- streamable HTTP -------------------------------------------------------------------------


async def test_calls_over_streamable_http_reuse_one_client(http_url: str) -> None:
    server = McpExecutor(transport="http", url=http_url)
    pool = McpPool()
    try:
        whoami = skill(pool, "whoami", server)
        counts = [(await whoami.execute({}, CTX)).data["calls"] for _ in range(3)]
        assert counts == [counts[0], counts[0] + 1, counts[0] + 2]

        failed = await skill(pool, "lookup_contact", server).execute({"email": "x@y.z"}, CTX)
        assert failed.is_error and "no contact" in failed.content

        assert "add" in {t.name for t in await pool.list_tools(server)}
        assert pool.connections_opened == 1
    finally:
        await pool.aclose()


async def test_an_unreachable_http_server_fails_clearly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    pool = McpPool(connect_timeout_seconds=5)
    try:
        server = McpExecutor(transport="http", url=f"http://127.0.0.1:{port}/mcp")
        with pytest.raises(
            SkillFailed, match=f"could not connect to the MCP server at 127.0.0.1:{port}"
        ):
            await skill(pool, "add", server).execute({}, CTX)
    finally:
        await pool.aclose()
