"""A tiny MCP server (the SDK's `MCPServer`, formerly FastMCP) for the MCP skill tests.

Run as a script it serves stdio: `python tests/fakes/mcp_server.py`. `build_server()` gives
the same tools for serving streamable HTTP in-process (`server.streamable_http_app()`).

Tools:
- `add(a, b)`: a typed result (text and structured content).
- `whoami()`: the server's process id and how many calls it has answered, so tests can
  tell one long-lived server from one started per call.
- `lookup_contact(email)`: fails with a tool error (`is_error`) for unknown addresses.
- `getWeather(city)`: camelCase name, for discovery's slugs.
- `delete_note(note_id)`: annotated destructive, so discovery makes it an action.
- `sleep(seconds)`: for timeouts.
- `read_env(name)`: the server's environment, to check what the client passed it.
- `crash()`: the process exits mid-call, to exercise reconnection.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

CONTACTS = {"ada@example.com": "Ada Lovelace, CTO at Analytical Engines"}


def build_server() -> MCPServer:
    server = MCPServer("cosmo-fake")
    calls = {"n": 0}

    def count() -> int:
        calls["n"] += 1
        return calls["n"]

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        count()
        return a + b

    @server.tool()
    def whoami() -> dict[str, int]:
        """The server's process id and the number of calls it has answered."""
        return {"pid": os.getpid(), "calls": count()}

    @server.tool()
    def lookup_contact(email: str) -> str:
        """Find a contact by email address."""
        count()
        if email not in CONTACTS:
            raise ToolError(f"no contact with the address {email}")
        return CONTACTS[email]

    @server.tool(name="getWeather")
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"Sunny in {city}"

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Wait, then answer."""
        await asyncio.sleep(seconds)
        return "awake"

    @server.tool()
    def read_env(name: str) -> str:
        """One environment variable of the server process."""
        return os.environ.get(name, "(unset)")

    @server.tool()
    def crash() -> str:
        """Exit the server process without answering."""
        sys.stdout.flush()
        os._exit(3)

    return server


if __name__ == "__main__":
    build_server().run()
