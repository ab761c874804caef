"""An in-memory stand-in for mem0's hosted platform, served through `httpx.MockTransport`.

The real `mem0.MemoryClient` talks to it unchanged (hand it
`httpx.Client(transport=fake.transport)`), so the wire format, the SDK's error mapping and
our request shapes are all exercised offline:

    fake = FakeMem0Platform(api_key="m0-test")
    client = MemoryClient(api_key="m0-test", client=httpx.Client(transport=fake.transport))

Endpoints (the ones `mem0ai` 2.2 calls for what Cosmo uses):

    GET    /v1/ping/                 key check: {org_id, project_id, user_email}
    POST   /v3/memories/add/         infer=false -> {"results": [...], "status": "SUCCEEDED"}
                                     infer=true  -> {"status": "PENDING", "event_id": ...}
    POST   /v3/memories/search/      {"query", "filters", "top_k", "threshold"} -> {"results"}
    POST   /v3/memories/?page=&page_size=   {"filters"} -> {"count", "next", "previous", "results"}
    GET    /v1/memories/{id}/        one memory, 404 {"detail": ...} when unknown
    DELETE /v1/memories/{id}/        404 when unknown
    DELETE /v1/batch/                {"memories": [{"memory_id": ...}]}, at most 1000

Filter semantics follow mem0's "Memory Filters v2" documentation, strictest reading:
the root is a dict of conditions or `AND`/`OR`/`NOT` lists; `"*"` matches any non-null
value; `{"in": [...]}` and `{"metadata": {...}}` work; **an entity field (user_id, agent_id,
app_id, run_id) not named anywhere in the filter must be null** (implicit null scoping),
and a filter must name at least one entity positively. Search entity ids at the top level
are rejected with 400, as the platform does. Search scores are word overlap (share of the
query's words found in the memory), which is enough to rank relevant above irrelevant.
With `infer=true` the fake "extracts" each user message as a memory, immediately.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx

ENTITIES = ("user_id", "agent_id", "app_id", "run_id")
_WORD = re.compile(r"\w+")
_MEMORY_PATH = re.compile(r"^/v1/memories/([^/]+)/$")


class FilterError(ValueError):
    pass


@dataclass
class FakeMem0Platform:
    api_key: str = "m0-test-key"
    memories: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=self.transport)

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        with self._lock:
            self.requests.append((request.method, path, body))
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            return _error(401, "Invalid API key")
        query = {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}
        try:
            if request.method == "GET" and path == "/v1/ping/":
                return _ok(
                    {
                        "status": "ok",
                        "org_id": "org_fake",
                        "project_id": "proj_fake",
                        "user_email": "cosmo@example.com",
                    }
                )
            if request.method == "POST" and path == "/v3/memories/add/":
                return self._add(body or {})
            if request.method == "POST" and path == "/v3/memories/search/":
                return self._search(body or {})
            if request.method == "POST" and path == "/v3/memories/":
                return self._list(body or {}, query)
            if request.method == "DELETE" and path == "/v1/batch/":
                return self._batch_delete(body or {})
            match = _MEMORY_PATH.match(path)
            if match and request.method == "GET":
                return self._get(match.group(1))
            if match and request.method == "DELETE":
                return self._delete(match.group(1))
        except FilterError as exc:
            return _error(400, str(exc))
        return _error(404, f"{request.method} {path} is not implemented by the fake")

    # -- endpoints -----------------------------------------------------------------------

    def _add(self, body: dict[str, Any]) -> httpx.Response:
        scope = {k: body.get(k) for k in ENTITIES if body.get(k) is not None}
        nested = body.get("filters") or {}
        scope.update({k: nested[k] for k in ENTITIES if isinstance(nested.get(k), str)})
        if not scope:
            raise FilterError("At least one of user_id, agent_id, app_id or run_id is required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise FilterError("messages must be a non-empty list")
        infer = body.get("infer", True)
        results = []
        with self._lock:
            for message in messages:
                role, content = message.get("role"), message.get("content")
                if role == "system" or not isinstance(content, str) or not content.strip():
                    continue
                if infer and role != "user":
                    continue  # "extraction" keeps what the user said
                memory_id = str(uuid.uuid4())
                now = datetime.now(UTC).isoformat()
                self.memories[memory_id] = {
                    "id": memory_id,
                    "memory": content,
                    **{k: scope.get(k) for k in ENTITIES},
                    "metadata": body.get("metadata") or {},
                    "categories": [],
                    "created_at": now,
                    "updated_at": now,
                }
                results.append({"id": memory_id, "memory": content, "event": "ADD"})
            if infer:
                event_id = str(uuid.uuid4())
                self.events[event_id] = {"id": event_id, "status": "SUCCEEDED", "results": results}
                return _ok(
                    {
                        "message": "Memory processing has been queued for background execution.",
                        "event_id": event_id,
                        "status": "PENDING",
                    }
                )
        return _ok(
            {
                "results": results,
                "message": "Memory added successfully.",
                "event_id": None,
                "status": "SUCCEEDED",
            }
        )

    def _search(self, body: dict[str, Any]) -> httpx.Response:
        top_level = [k for k in ENTITIES if k in body]
        if top_level:
            raise FilterError(f"{top_level} must be passed inside filters")
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise FilterError("query is required")
        selected = self._select(body.get("filters"))
        threshold = float(body.get("threshold", 0.1))
        top_k = int(body.get("top_k", 10))
        words = set(_WORD.findall(query.lower()))
        scored = []
        for memory in selected:
            found = words & set(_WORD.findall(memory["memory"].lower()))
            score = len(found) / len(words) if words else 0.0
            if score >= threshold and score > 0:
                scored.append({**memory, "score": round(score, 4)})
        scored.sort(key=lambda m: (m["score"], m["created_at"]), reverse=True)
        return _ok({"results": scored[:top_k]})

    def _list(self, body: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        selected = self._select(body.get("filters"))
        selected.sort(key=lambda m: (m["created_at"], m["id"]), reverse=True)
        page = int(query.get("page", 1))
        size = min(int(query.get("page_size", 100)), 100)
        start = (page - 1) * size
        more = start + size < len(selected)
        return _ok(
            {
                "count": len(selected),
                "next": f"https://api.mem0.ai/v3/memories/?page={page + 1}" if more else None,
                "previous": f"https://api.mem0.ai/v3/memories/?page={page - 1}"
                if page > 1
                else None,
                "results": selected[start : start + size],
            }
        )

    def _get(self, memory_id: str) -> httpx.Response:
        with self._lock:
            memory = self.memories.get(memory_id)
        if memory is None:
            return _error(404, "Memory not found")
        return _ok(dict(memory))

    def _delete(self, memory_id: str) -> httpx.Response:
        with self._lock:
            if self.memories.pop(memory_id, None) is None:
                return _error(404, "Memory not found")
        return _ok({"message": "Memory deleted successfully!"})

    def _batch_delete(self, body: dict[str, Any]) -> httpx.Response:
        items = body.get("memories")
        if not isinstance(items, list) or not 1 <= len(items) <= 1000:
            raise FilterError("memories must list 1 to 1000 items")
        with self._lock:
            for item in items:
                self.memories.pop(str(item.get("memory_id")), None)
        return _ok({"message": f"Successfully deleted {len(items)} memories"})

    # -- filters -------------------------------------------------------------------------

    def _select(self, filters: Any) -> list[dict[str, Any]]:
        if not isinstance(filters, dict) or not filters:
            raise FilterError("filters are required")
        named, positive = _entities_named(filters)
        if not positive:
            raise FilterError("filters must scope at least one entity id positively")
        with self._lock:
            memories = [dict(m) for m in self.memories.values()]
        return [
            m
            for m in memories
            if all(m.get(k) is None for k in ENTITIES if k not in named) and _matches(m, filters)
        ]


def _entities_named(node: Any) -> tuple[set[str], bool]:
    """Entity fields a filter mentions, and whether one has a concrete (non-"*") value."""
    named: set[str] = set()
    positive = False
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("AND", "OR", "NOT"):
                for sub in value if isinstance(value, list) else [value]:
                    sub_named, sub_positive = _entities_named(sub)
                    named |= sub_named
                    positive = positive or (sub_positive and key != "NOT")
            elif key in ENTITIES:
                named.add(key)
                positive = positive or value != "*"
    return named, positive


def _matches(memory: dict[str, Any], node: dict[str, Any]) -> bool:
    for key, value in node.items():
        if key == "AND":
            if not all(_matches(memory, sub) for sub in value):
                return False
        elif key == "OR":
            if not any(_matches(memory, sub) for sub in value):
                return False
        elif key == "NOT":
            subs = value if isinstance(value, list) else [value]
            if any(_matches(memory, sub) for sub in subs):
                return False
        elif key == "metadata":
            meta = memory.get("metadata") or {}
            if not all(meta.get(k) == v for k, v in value.items()):
                return False
        elif not _condition(memory.get(key), value):
            return False
    return True


def _condition(actual: Any, expected: Any) -> bool:
    if expected == "*":
        return actual is not None
    if isinstance(expected, dict):
        if "in" in expected:
            return actual in expected["in"]
        if "eq" in expected:
            return bool(actual == expected["eq"])
        if "ne" in expected:
            return bool(actual != expected["ne"])
        raise FilterError(f"operator {sorted(expected)} is not supported by the fake")
    return bool(actual == expected)


def _ok(payload: Any) -> httpx.Response:
    return httpx.Response(200, json=payload)


def _error(status: int, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"detail": detail})
