"""HTTP skills against a real local server: what goes on the wire, and what comes back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from core.schemas.skill import HttpExecutor, SkillKind, SkillSpec
from core.skills.builtins import BuiltinCatalog
from core.skills.factory import SkillFactory
from core.skills.mcp_executor import McpPool
from core.skills.runtime import (
    Skill,
    SkillArgumentsInvalid,
    SkillConfigInvalid,
    SkillContext,
    SkillFailed,
)

CTX = SkillContext(
    tenant_id="t1",
    agent_id="agt_1",
    agent_name="sales-bot",
    session_id=None,
    user_id="U1",
    user_name=None,
)
SECRET = "Bearer sk-live-0123456789abcdef"
ENV = {"CRM_AUTH_HEADER": SECRET}


@dataclass
class Seen:
    method: str
    path: str  # raw, as sent: percent-encoding intact
    headers: dict[str, str]
    body: bytes


@dataclass
class CrmServer:
    base: str
    seen: list[Seen] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append(Seen(self.command, self.path, headers, body))
        route = self.path.split("?")[0]
        if route == "/slow":
            time.sleep(6)
            self._send(200, b'{"late": true}')
        elif route == "/drip":  # answers at once, then trickles: only a total deadline helps
            self._start(200, "text/plain")
            for _ in range(60):
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
                time.sleep(0.1)
        elif route == "/endless":
            self._start(200, "text/plain")
            try:
                while True:
                    self.wfile.write(b"y" * 4096)
            except OSError:
                pass
        elif route.startswith("/status/"):
            status = int(route.rsplit("/", 1)[1])
            payload = {"error": "no such contact", "detail": "z" * 5_000, "auth": headers}
            self._send(status, json.dumps(payload).encode())
        elif route == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/admin/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/empty":
            self.send_response(204)
            self.end_headers()
        elif route == "/text":
            self._send(200, "plain words, ünïcode".encode(), "text/plain; charset=utf-8")
        else:  # echo, pretty-printed so compaction shows
            echo: dict[str, Any] = {"method": self.command, "path": self.path, "headers": headers}
            echo["json"] = json.loads(body) if body else None
            self._send(200, json.dumps(echo, indent=2).encode())

    def _start(self, status: int, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[Seen]


@pytest.fixture(scope="module")
def _server() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def crm(_server: _Server) -> CrmServer:
    _server.seen = []
    host, port = _server.server_address[:2]
    return CrmServer(f"http://{host!s}:{port}", _server.seen)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def build(
    http: httpx.AsyncClient,
    url: str,
    *,
    schema: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    **executor: Any,
) -> Skill:
    factory = SkillFactory(
        BuiltinCatalog.default(), http, (ENV if env is None else env).get, McpPool()
    )
    spec = SkillSpec(
        name="crm_call",
        description="Call the CRM.",
        kind=SkillKind.ACTION,
        input_schema=schema or {"type": "object", "properties": {}},
        executor=HttpExecutor(url=url, **executor),
    )
    return factory.build(spec)


# --- the request -------------------------------------------------------------------------


async def test_hostile_values_cannot_change_the_urls_structure(
    crm: CrmServer, http: httpx.AsyncClient
) -> None:
    skill = build(http, crm.base + "/contacts/{{contact_id}}/notes?q={{query}}&v=1", method="GET")

    await skill.execute({"contact_id": "../admin?x=1#", "query": "a&b=c#d e/f"}, CTX)

    assert crm.seen[0].path == "/contacts/..%2Fadmin%3Fx%3D1%23/notes?q=a%26b%3Dc%23d%20e%2Ff&v=1"


@pytest.mark.parametrize("value", ["..", ".", ""])
async def test_path_values_that_would_collapse_a_segment_are_refused(
    value: str, crm: CrmServer, http: httpx.AsyncClient
) -> None:
    skill = build(http, crm.base + "/contacts/{{contact_id}}/notes", method="GET")

    with pytest.raises(SkillArgumentsInvalid, match=r"\$\.contact_id: must not be empty"):
        await skill.execute({"contact_id": value}, CTX)
    assert crm.seen == []


async def test_a_path_placeholder_without_value_is_an_argument_error(
    crm: CrmServer, http: httpx.AsyncClient
) -> None:
    skill = build(http, crm.base + "/contacts/{{contact_id}}", method="GET")

    with pytest.raises(SkillArgumentsInvalid, match=r"\$\.contact_id: required, because"):
        await skill.execute({}, CTX)
    assert crm.seen == []


async def test_absent_optional_arguments_drop_their_query_parameter(
    crm: CrmServer, http: httpx.AsyncClient
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer", "default": 5},
            "owner": {"type": ["string", "null"]},
        },
    }
    url = crm.base + "/contacts?q={{query}}&limit={{limit}}&owner={{owner}}"
    skill = build(http, url, method="GET", schema=schema)

    await skill.execute({"query": "acme"}, CTX)  # limit from the schema default, no owner
    await skill.execute({"query": "acme", "limit": 2, "owner": None}, CTX)

    assert [s.path for s in crm.seen] == ["/contacts?q=acme&limit=5", "/contacts?q=acme&limit=2"]


async def test_the_body_template_keeps_json_types(crm: CrmServer, http: httpx.AsyncClient) -> None:
    template = {
        "contact_id": "{{contact_id}}",
        "count": "{{ count }}",
        "tags": "{{tags}}",
        "flag": "{{flag}}",
        "meta": "{{meta}}",
        "note": "Re: {{title}} ({{count}}, {{tags}}, {{missing}})",
        "nested": {"items": ["{{title}}", "{{missing}}", "fixed"]},
        "optional": "{{missing}}",
        "static": 7,
    }
    skill = build(http, crm.base + "/notes", body_template=template)

    await skill.execute(
        {
            "contact_id": "c1",
            "count": 3,
            "tags": ["a", "b"],
            "flag": False,
            "meta": {"k": None},
            "title": "Hi",
        },
        CTX,
    )

    seen = crm.seen[0]
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {
        "contact_id": "c1",
        "count": 3,
        "tags": ["a", "b"],
        "flag": False,
        "meta": {"k": None},
        "note": "Re: Hi (3, a,b, )",
        "nested": {"items": ["Hi", "fixed"]},
        "static": 7,
    }


async def test_without_a_template_post_sends_the_arguments_and_get_sends_none(
    crm: CrmServer, http: httpx.AsyncClient
) -> None:
    await build(http, crm.base + "/tasks", method="POST").execute({"title": "Call", "n": 1}, CTX)
    await build(http, crm.base + "/tasks", method="GET").execute({"title": "Call"}, CTX)

    assert json.loads(crm.seen[0].body) == {"title": "Call", "n": 1}
    assert (crm.seen[1].method, crm.seen[1].body) == ("GET", b"")


async def test_placeholders_in_the_host_are_refused_when_built(http: httpx.AsyncClient) -> None:
    with pytest.raises(SkillConfigInvalid, match="scheme and host must be fixed"):
        build(http, "https://{{tenant}}.crm.example.com/api")


# --- secrets -------------------------------------------------------------------------------


async def test_the_secret_header_is_sent_but_never_shown(
    crm: CrmServer, http: httpx.AsyncClient
) -> None:
    skill = build(
        http,
        crm.base + "/echo",
        headers={"X-Team": "enterprise"},
        secret_headers={"Authorization": "CRM_AUTH_HEADER"},
    )
    failing = build(
        http, crm.base + "/status/401", secret_headers={"Authorization": "CRM_AUTH_HEADER"}
    )

    ok = await skill.execute({}, CTX)
    error = await failing.execute({}, CTX)

    assert [s.headers["authorization"] for s in crm.seen] == [SECRET, SECRET]
    assert crm.seen[0].headers["x-team"] == "enterprise"
    assert crm.seen[0].headers["accept"] == "application/json"
    # The echo server reflects the header back; neither the value nor its token survives.
    for result in (ok, error):
        shown = result.content + json.dumps(result.data)
        assert "sk-live-0123456789abcdef" not in shown
        assert "[redacted]" in shown
    assert ok.data["body"]["headers"]["authorization"] == "[redacted]"


async def test_a_missing_environment_variable_is_named_and_nothing_is_sent(
    crm: CrmServer, http: httpx.AsyncClient
) -> None:
    skill = build(
        http,
        crm.base + "/echo",
        env={},
        secret_headers={"Authorization": "CRM_AUTH_HEADER"},
    )

    with pytest.raises(SkillFailed, match=r"CRM_AUTH_HEADER .*is not set") as caught:
        await skill.execute({}, CTX)
    assert "Authorization" in caught.value.detail
    assert crm.seen == []


# --- the response --------------------------------------------------------------------------


async def test_a_json_response_is_compacted_for_the_model_and_parsed_into_data(
    crm: CrmServer, http: httpx.AsyncClient
) -> None:
    result = await build(http, crm.base + "/echo?x=1", method="GET").execute({}, CTX)

    assert not result.is_error
    assert result.data["status"] == 200
    assert result.data["body"]["path"] == "/echo?x=1"
    assert result.content == json.dumps(result.data["body"], separators=(",", ":"))
    assert "\n" not in result.content


async def test_text_and_empty_responses(crm: CrmServer, http: httpx.AsyncClient) -> None:
    text = await build(http, crm.base + "/text", method="GET").execute({}, CTX)
    empty = await build(http, crm.base + "/empty", method="DELETE").execute({}, CTX)

    assert (text.content, text.data) == (
        "plain words, ünïcode",
        {"status": 200, "body": "plain words, ünïcode"},
    )
    assert (empty.content, empty.is_error) == ("HTTP 204: done (no content).", False)


async def test_a_non_2xx_answer_is_an_error_result_with_a_trimmed_body(
    crm: CrmServer, http: httpx.AsyncClient
) -> None:
    result = await build(http, crm.base + "/status/404", method="GET").execute({}, CTX)

    assert result.is_error
    assert result.content.startswith("HTTP 404 Not Found from 127.0.0.1: ")
    assert '"error":"no such contact"' in result.content
    assert len(result.content) < 1_100  # the 5 kB body is cut for the model...
    assert len(result.data["body"]["detail"]) == 5_000  # ...but kept whole in data
    assert result.data["status"] == 404


async def test_redirects_are_not_followed(crm: CrmServer, http: httpx.AsyncClient) -> None:
    result = await build(http, crm.base + "/redirect", method="GET").execute({}, CTX)

    assert result.is_error
    assert "HTTP 302" in result.content and "redirects are not followed" in result.content
    assert [s.path for s in crm.seen] == ["/redirect"]


async def test_the_response_is_capped_while_streaming(
    crm: CrmServer, http: httpx.AsyncClient
) -> None:
    skill = build(http, crm.base + "/endless", method="GET", max_response_bytes=10_000)

    result = await skill.execute({}, CTX)  # an endless body: reading it all would never end

    assert result.content == "y" * 10_000 + "\n[response truncated at 10000 bytes]"
    assert result.data == {"status": 200, "body": "y" * 10_000, "truncated": True}


@pytest.mark.parametrize("route", ["/slow", "/drip"])
async def test_a_slow_server_times_out_as_a_whole(
    route: str, crm: CrmServer, http: httpx.AsyncClient
) -> None:
    skill = build(http, crm.base + route, method="GET", timeout_seconds=0.3)

    started = time.monotonic()
    with pytest.raises(SkillFailed, match=r"127\.0\.0\.1 did not answer within 0\.3 s"):
        await skill.execute({}, CTX)
    assert time.monotonic() - started < 3  # the whole answer would take 6 s


async def test_an_unreachable_server_fails_without_detail(http: httpx.AsyncClient) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    skill = build(http, f"http://127.0.0.1:{port}/x?token={{{{t}}}}", method="GET")

    with pytest.raises(SkillFailed) as caught:
        await skill.execute({"t": "private-value"}, CTX)
    assert caught.value.detail == "crm_call: could not reach 127.0.0.1 (ConnectError)"
