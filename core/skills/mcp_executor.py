"""MCP skills: tools on Model Context Protocol servers, reached over stdio or streamable HTTP.

`McpPool` keeps one client per server open for the life of the process, because starting
a stdio server per call costs a second or more. Each connection is owned by a background
task (anyio cancel scopes must be entered and left in one task, while calls arrive from
many), so calls from any task share it; the MCP session multiplexes concurrent requests.
A per-server lock makes sure only one connection is ever being opened for a server.

Failures: a connection whose stream ended (the server exited, the pipe broke) is noticed
before the next call and replaced, so that call runs on a fresh one. A connection that
breaks *during* a call is dropped and the call fails: the tool may or may not have run,
and retrying could repeat an action, so the error says so and the next call reconnects.
Waiting for a connection is bounded by the pool's `connect_timeout_seconds`, the call
itself by the skill's `timeout_seconds`.

Uses the `mcp` 2.x SDK: `mcp.Client` over `stdio_client` / `streamable_http_client`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TextIO

import anyio
import httpx2

from core.schemas.skill import McpExecutor
from core.skills.egress import SkillDestinationRefused
from core.skills.mcp_servers import McpServers
from core.skills.runtime import SkillContext, SkillFailed, SkillResult

# The SDK is imported where it is used: it is large, and most processes (the CLI, a
# serve without MCP skills) never open a connection.
if TYPE_CHECKING:
    import mcp_types
    from mcp import Client
    from mcp.client import Transport

    # these live in private SDK modules
    from mcp.client._transport import TransportStreams
    from mcp.shared._stream_protocols import ReadStream
    from mcp.shared.message import SessionMessage

log = logging.getLogger("cosmo.skills.mcp")

SecretLookup = Callable[[str], str | None]
ServerKey = tuple[str, str, str]

#: The model reads at most this much of one tool result.
MAX_CONTENT_CHARS = 100_000
_CLOSE_TIMEOUT = 5.0
_MAX_LIST_PAGES = 100


class McpUnavailable(SkillFailed):
    """The MCP server could not be started, reached, or kept connected."""


# --- one connection ------------------------------------------------------------------------


class _WatchedReadStream:
    """Passes the transport's read stream through and reports when it ends.

    The SDK keeps a client whose server died looking open (calls then fail with
    "Connection closed"); seeing the end of the stream lets the pool replace the connection
    *before* sending the next call, instead of failing it.
    """

    def __init__(self, inner: ReadStream[SessionMessage | Exception], on_end: Callable[[], None]):
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:  # the SDK reads this off context-carrying streams
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        self._on_end()
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


@asynccontextmanager
async def _http_transport(
    url: str, make_client: Callable[[], httpx2.AsyncClient] | None
) -> AsyncIterator[TransportStreams]:
    from mcp.client.streamable_http import streamable_http_client

    if make_client is None:
        async with streamable_http_client(url) as streams:
            yield streams
        return
    # The SDK leaves a client it was given open; this connection owns it.
    async with make_client() as client, streamable_http_client(url, http_client=client) as streams:
        yield streams


@asynccontextmanager
async def _watched(
    transport: Transport, on_end: Callable[[], None]
) -> AsyncIterator[TransportStreams]:
    async with transport as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, on_end), write_stream


class _Connection:
    """One open client, owned by a background task from connect to close."""

    def __init__(self, label: str, transport: Callable[[Callable[[], None]], Transport]) -> None:
        self.label = label
        self.client: Client | None = None
        self.error: BaseException | None = None
        self.ended = False
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(transport), name=f"mcp-connection {label}")

    @property
    def usable(self) -> bool:
        return not self.ended

    def _end(self) -> None:
        self.ended = True

    async def _run(self, transport: Callable[[Callable[[], None]], Transport]) -> None:
        from mcp import Client

        try:
            async with Client(transport(self._end), cache=None) as client:
                self.client = client
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:
            self.error = exc
            if not self._stop.is_set():
                log.warning("MCP connection to %s failed: %s", self.label, _describe(exc))
        finally:
            self.ended = True
            self.client = None
            self._ready.set()

    async def wait(self, timeout_seconds: float) -> Client:
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._ready.wait()
        except TimeoutError:
            raise McpUnavailable(
                f"the MCP server {self.label} did not answer within {timeout_seconds:g} s"
            ) from None
        if self.client is None:
            raise McpUnavailable(
                f"could not connect to the MCP server {self.label}: {_describe(self.error)}"
            )
        return self.client

    async def aclose(self) -> None:
        self._stop.set()
        if not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), _CLOSE_TIMEOUT)
            except TimeoutError:
                self._task.cancel()
                log.warning("MCP connection to %s did not close in time", self.label)


def _describe(exc: BaseException | None) -> str:
    """A short, safe reason: the kind of failure, not its text (which can quote URLs)."""
    import mcp_types
    from mcp import MCPError

    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if exc is None:
        return "connection closed"
    if isinstance(exc, SkillDestinationRefused):
        return exc.detail  # written to be shown: where, and why it is refused
    if isinstance(exc, FileNotFoundError):
        return "command not found"
    if isinstance(exc, PermissionError):
        return "command not executable"
    if isinstance(exc, MCPError) and exc.code == mcp_types.CONNECTION_CLOSED:
        return "the server closed the connection"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(sorted({_describe(e) for e in exc.exceptions}))
    return type(exc).__name__


# --- the pool ------------------------------------------------------------------------------


def server_label(server: McpExecutor) -> str:
    """How errors and logs name a server: its configured name or its host, never a URL's
    path or credentials."""
    if server.transport == "stdio":
        return f"`{server.server}` (stdio)"
    url = server.url or ""
    host = re.sub(r"^https?://(?:[^@/]*@)?", "", url).split("/")[0]
    return f"at {host}"


def server_key(server: McpExecutor) -> ServerKey:
    return (server.transport, server.server or "", server.url or "")


class McpPool:
    """One open MCP client per server, shared by every skill and agent in the process.

    `servers` are the operator's stdio servers by name (`COSMO_MCP_SERVERS`); `secrets`
    resolves the `${NAME}` references in their environment, at connect time. `http_client`
    makes the client of each streamable-HTTP connection (the wiring passes the skill egress
    guard's); without one the SDK's default is used. `errlog` receives the stderr of stdio
    servers (default: ours). A pool belongs to one event loop; close it with `aclose()` at
    shutdown so stdio servers exit.
    """

    def __init__(
        self,
        *,
        servers: McpServers | None = None,
        secrets: SecretLookup | None = None,
        errlog: TextIO | None = None,
        connect_timeout_seconds: float = 30.0,
        http_client: Callable[[], httpx2.AsyncClient] | None = None,
    ) -> None:
        self.servers: McpServers = dict(servers or {})
        self._secrets = secrets or (lambda _name: None)
        self._http_client = http_client
        self._errlog = errlog
        self.connect_timeout_seconds = connect_timeout_seconds
        self._connections: dict[ServerKey, _Connection] = {}
        self._locks: dict[ServerKey, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.connections_opened = 0
        """Connections started since the pool was made (for metrics and tests)."""

    # --- connecting ------------------------------------------------------------------------

    def _transport(self, server: McpExecutor) -> Callable[[Callable[[], None]], Transport]:
        if server.transport == "http":
            url = server.url or ""
            make_client = self._http_client
            return lambda on_end: _watched(_http_transport(url, make_client), on_end)
        config = self.servers.get(server.server or "")
        if config is None:
            raise McpUnavailable(f"no MCP server named {server.server!r} is configured")
        try:
            env = config.resolved_env(self._secrets)
        except LookupError as missing:
            raise McpUnavailable(
                f"the MCP server {server_label(server)} needs the environment variable "
                f"{missing.args[0]}, which is not set"
            ) from None
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        command = config.command
        params = StdioServerParameters(
            command=command[0], args=command[1:], env=env or None, cwd=config.cwd
        )
        if self._errlog is None:
            return lambda on_end: _watched(stdio_client(params), on_end)
        errlog = self._errlog
        return lambda on_end: _watched(stdio_client(params, errlog=errlog), on_end)

    async def _client(self, server: McpExecutor) -> tuple[_Connection, Client]:
        if self._closed:
            raise McpUnavailable("MCP connections are shut down")
        key = server_key(server)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._connections.get(key)
            if conn is None or not conn.usable:
                if conn is not None:
                    self._close_later(conn)
                conn = _Connection(server_label(server), self._transport(server))
                self._connections[key] = conn
                self.connections_opened += 1
        return conn, await conn.wait(self.connect_timeout_seconds)

    def _close_later(self, conn: _Connection) -> None:
        task = asyncio.create_task(conn.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _drop(self, server: McpExecutor, conn: _Connection) -> None:
        key = server_key(server)
        if self._connections.get(key) is conn:
            del self._connections[key]
        self._close_later(conn)

    # --- calls -----------------------------------------------------------------------------

    async def call_tool(
        self,
        server: McpExecutor,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_seconds: float,
    ) -> mcp_types.CallToolResult:
        """Call one tool. Raises `McpUnavailable`, `SkillFailed` or `TimeoutError`."""
        import mcp_types
        from mcp import MCPError

        conn, client = await self._client(server)
        try:
            async with asyncio.timeout(timeout_seconds):
                return await client.call_tool(tool, arguments, read_timeout_seconds=timeout_seconds)
        except TimeoutError:
            raise
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                self._drop(server, conn)
                raise McpUnavailable(
                    f"lost the connection to the MCP server {conn.label} during the call, so "
                    "it may or may not have run; check before calling again"
                ) from None
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                raise TimeoutError from None
            raise SkillFailed(
                f"the MCP server {conn.label} refused the call: {_trim(exc.message, 300)}"
            ) from None
        except Exception as exc:
            self._drop(server, conn)
            log.warning("MCP call to %s failed: %s", conn.label, _describe(exc))
            raise McpUnavailable(
                f"the call to the MCP server {conn.label} failed ({_describe(exc)}), so it "
                "may or may not have run"
            ) from None

    async def list_tools(
        self, server: McpExecutor, *, timeout_seconds: float | None = None
    ) -> list[mcp_types.Tool]:
        """Every tool the server offers (all pages)."""
        conn, client = await self._client(server)
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(timeout_seconds or server.timeout_seconds):
                for _ in range(_MAX_LIST_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
        except TimeoutError:
            raise McpUnavailable(
                f"the MCP server {conn.label} did not list its tools in time"
            ) from None
        except Exception as exc:
            self._drop(server, conn)
            raise McpUnavailable(
                f"could not list the tools of the MCP server {conn.label} ({_describe(exc)})"
            ) from None
        return tools

    async def aclose(self) -> None:
        """Close every connection (stdio servers exit); the pool refuses calls afterwards."""
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.aclose() for c in connections), *self._closing)


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- skills --------------------------------------------------------------------------------


def tool_result(result: mcp_types.CallToolResult) -> SkillResult:
    """An MCP tool result as the model and the execution log see it."""
    import mcp_types

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[binary resource {resource.uri} ({resource.mime_type or '?'})]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource {block.name}: {block.uri}]")
        else:
            parts.append(f"[{block.type} content ({block.mime_type}) not shown]")
    text = "\n".join(parts)
    structured = result.structured_content
    if not text.strip() and structured is not None:
        text = json.dumps(structured, ensure_ascii=False, separators=(",", ":"))
    if len(text) > MAX_CONTENT_CHARS:
        text = text[:MAX_CONTENT_CHARS] + f"\n[result truncated at {MAX_CONTENT_CHARS} characters]"
    if result.is_error:
        return SkillResult(text or "The tool reported an error.", structured, is_error=True)
    return SkillResult(text or "(the tool returned nothing)", structured)


class McpSkillExecutor:
    """Calls `tool` (default: the skill's name) on the configured server through the pool."""

    def __init__(self, skill: str, config: McpExecutor, pool: McpPool) -> None:
        self.skill = skill
        self.config = config
        self.pool = pool

    async def execute(self, arguments: dict[str, Any], ctx: SkillContext) -> SkillResult:
        timeout = self.config.timeout_seconds
        try:
            result = await self.pool.call_tool(
                self.config, self.config.tool or self.skill, arguments, timeout_seconds=timeout
            )
        except TimeoutError:
            raise SkillFailed(f"{self.skill} timed out after {timeout:g} s") from None
        except SkillFailed as exc:
            raise SkillFailed(f"{self.skill}: {exc.detail}") from None
        return tool_result(result)
