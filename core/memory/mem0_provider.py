"""The mem0 memory provider: mem0's open-source `Memory`, or its hosted platform.

`Mem0Memory` adapts either backend to `MemoryProvider`:

* **OSS** (`mem0.Memory` from a config dict): an LLM, an embedder and a vector store of
  your choosing. `build_mem0` defaults to an on-disk Qdrant under the data dir, our own
  embedder (MiniLM, plugged in through a small adapter, so no model hub or API key is
  needed) and, when an Anthropic key is configured, Claude for fact extraction.
* **Hosted** (`mem0.MemoryClient`, chosen when `MEM0_API_KEY` is set): mem0's platform.

mem0 has no tenants, so user and agent ids are namespaced as `"{tenant}:{id}"` on the way
in and stripped on the way out; results whose namespace is not the caller's tenant are
dropped. On the platform the tenant is also the `app_id`, because its filters scope every
entity field (an entity not named in a filter must be null) and demand one positively
scoped id, which lets a tenant-wide list name the tenant. The session id travels as
metadata (`cosmo_session`), never as mem0's `run_id`, for the same null-scoping reason.

With `infer=True` mem0 asks its LLM to distil facts (and may update or drop older ones);
the platform then works asynchronously and `add` returns no records. With `infer=False`
the exchange is stored as `core.memory.exchange` describes, exactly as the local provider
stores it.

mem0's quirks handled here (see FIELD-NOTES): `MEM0_TELEMETRY=False` and `MEM0_DIR` are
set before mem0 is first imported (it is imported lazily, inside functions); the OSS
`Memory` is not thread-safe, so every call on it holds a lock; closing it also closes the
Qdrant client, or the folder stays locked; `search`/`get_all` take entity ids only inside
`filters`; the Anthropic config needs `enable_sampling_parameters: False`.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from core.embeddings.port import Embedder
from core.memory.exchange import memory_texts
from core.memory.port import InvalidMemoryArgument, MemoryMessage, MemoryRecord

_log = logging.getLogger(__name__)

MEM0_SUBDIR = "mem0"
COLLECTION = "cosmo_memories"
# Stands in for the embedder/LLM mem0 insists on constructing when ours replace them;
# never sent anywhere (the adapter replaces the embedder, `infer=False` skips the LLM).
_PLACEHOLDER_KEY = "unused-by-cosmo"
_OSS_SCAN_LIMIT = 10_000  # OSS `get_all` is unordered: fetch this many, then sort
_PAGE_SIZE = 100
_BATCH_DELETE = 1000
_TENANT_KEY, _SESSION_KEY = "cosmo_tenant", "cosmo_session"
_Owns = Callable[[Mapping[str, Any]], bool]


def prepare_mem0_env(data_dir: Path) -> Path:
    """Turn telemetry off and keep mem0's files under our data dir; call before importing.

    mem0 reads both variables at import time (telemetry phones home to PostHog; MEM0_DIR
    defaults to `~/.mem0`). If mem0 is already imported they no longer apply, which is why
    the config below also names every path explicitly.
    """
    mem0_dir = data_dir / MEM0_SUBDIR
    mem0_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MEM0_TELEMETRY"] = "False"
    os.environ["MEM0_DIR"] = str(mem0_dir)
    return mem0_dir


def oss_config(
    *,
    data_dir: Path,
    embedding_dims: int,
    anthropic_api_key: str | None = None,
    anthropic_base_url: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """A `mem0.Memory` config: on-disk Qdrant, Claude as the LLM when a key is given."""
    mem0_dir = data_dir / MEM0_SUBDIR
    llm: dict[str, Any]
    if anthropic_api_key:
        llm_config: dict[str, Any] = {
            "api_key": anthropic_api_key,
            # mem0 sends `temperature` otherwise, which the current SDK/models reject.
            "enable_sampling_parameters": False,
        }
        if model:
            llm_config["model"] = model
        if anthropic_base_url:
            llm_config["anthropic_base_url"] = anthropic_base_url
        llm = {"provider": "anthropic", "config": llm_config}
    else:
        llm = {"provider": "openai", "config": {"api_key": _PLACEHOLDER_KEY}}
    return {
        "vector_store": {
            "provider": "qdrant",
            "config": {
                "path": str(mem0_dir / "qdrant"),
                "collection_name": COLLECTION,
                "embedding_model_dims": embedding_dims,
                "on_disk": True,
            },
        },
        # Replaced by our embedder right after construction (see `Mem0Memory.oss`).
        "embedder": {
            "provider": "openai",
            "config": {"api_key": _PLACEHOLDER_KEY, "embedding_dims": embedding_dims},
        },
        "llm": llm,
        "history_db_path": str(mem0_dir / "history.db"),
    }


def build_mem0(
    *,
    data_dir: Path,
    api_key: str | None = None,
    host: str | None = None,
    http_client: httpx.Client | None = None,
    embedder: Embedder | None = None,
    anthropic_api_key: str | None = None,
    anthropic_base_url: str | None = None,
    model: str | None = None,
    config: Mapping[str, Any] | None = None,
    infer: bool | None = None,
) -> Mem0Memory:
    """The mem0 provider from settings: hosted when `api_key` is set, else OSS.

    For OSS, `config` replaces the default `oss_config(...)` wholesale; `embedder`
    (required unless `config` brings its own) replaces mem0's embedder. `infer` defaults to
    True on the platform and for OSS when an LLM is configured, else False.
    """
    prepare_mem0_env(data_dir)
    if api_key:
        return Mem0Memory.hosted(
            api_key=api_key,
            host=host,
            http_client=http_client,
            infer=True if infer is None else infer,
        )
    if config is None:
        if embedder is None:
            raise ValueError("the OSS mem0 provider needs an embedder or a full mem0 config")
        config = oss_config(
            data_dir=data_dir,
            embedding_dims=embedder.dimension,
            anthropic_api_key=anthropic_api_key,
            anthropic_base_url=anthropic_base_url,
            model=model,
        )
        has_llm = anthropic_api_key is not None
    else:
        has_llm = True
    return Mem0Memory.oss(config, embedder=embedder, infer=has_llm if infer is None else infer)


class _EmbedderAdapter:
    """Our `Embedder` in the shape mem0 calls (`embed`, `embed_batch`), without subclassing
    mem0's base class, so importing this module never imports mem0."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self.config = SimpleNamespace(embedding_dims=embedder.dimension, model=embedder.model_name)

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        return [float(x) for x in self._embedder.embed([text])[0]]

    def embed_batch(self, texts: Sequence[str], memory_action: str = "add") -> list[list[float]]:
        return [[float(x) for x in row] for row in self._embedder.embed(list(texts))]


@dataclass(frozen=True)
class _Scope:
    """Namespaced ids for one call, and the conversions back."""

    tenant: str

    def wrap(self, value: str) -> str:
        return f"{self.tenant}:{value}"

    def unwrap(self, value: object) -> str | None:
        prefix = f"{self.tenant}:"
        if isinstance(value, str) and value.startswith(prefix):
            return value[len(prefix) :]
        return None

    def owns(self, item: Mapping[str, Any]) -> bool:
        meta = item.get("metadata") or {}
        if isinstance(meta, Mapping) and _TENANT_KEY in meta:
            return bool(meta[_TENANT_KEY] == self.tenant)
        return self.unwrap(item.get("user_id")) is not None


class Mem0Memory:
    """`MemoryProvider` over mem0; see the module docstring."""

    name = "mem0"

    def __init__(self, backend: _Backend, *, infer: bool) -> None:
        self._backend = backend
        self.infer = infer

    @classmethod
    def oss(
        cls, config: Mapping[str, Any], *, embedder: Embedder | None = None, infer: bool = False
    ) -> Mem0Memory:
        memory = _mem0().Memory.from_config(dict(config))
        if embedder is not None:
            memory.embedding_model = _EmbedderAdapter(embedder)
        return cls(_OssBackend(memory), infer=infer)

    @classmethod
    def hosted(
        cls,
        *,
        api_key: str,
        host: str | None = None,
        http_client: httpx.Client | None = None,
        infer: bool = True,
    ) -> Mem0Memory:
        # The constructor pings the platform to validate the key (network, once).
        client = _mem0().MemoryClient(api_key=api_key, host=host, client=http_client)
        return cls(_HostedBackend(client), infer=infer)

    def close(self) -> None:
        """Release the backend (for OSS this also frees Qdrant's folder lock)."""
        self._backend.close()

    # -- MemoryProvider ------------------------------------------------------------------

    def add(
        self,
        tenant_id: str,
        messages: Sequence[MemoryMessage],
        *,
        user_id: str,
        agent_id: str,
        session_id: str | None = None,
    ) -> builtins.list[MemoryRecord]:
        scope = _scope(tenant_id)
        _check_entity("user_id", user_id)
        _check_entity("agent_id", agent_id)
        if self.infer:  # mem0's LLM reads the whole exchange
            payload = [
                {"role": m.role, "content": m.content} for m in messages if m.content.strip()
            ]
        else:
            payload = [{"role": t.role, "content": t.text} for t in memory_texts(messages)]
        if not payload:
            return []
        metadata: dict[str, Any] = {_TENANT_KEY: tenant_id}
        if session_id is not None:
            metadata[_SESSION_KEY] = session_id
        now = datetime.now(UTC)
        items = self._backend.add(
            payload,
            tenant=tenant_id,
            user_id=scope.wrap(user_id),
            agent_id=scope.wrap(agent_id),
            metadata=metadata,
            infer=self.infer,
        )
        out = []
        for item in items:
            if item.get("event", "ADD") != "ADD":
                continue
            text = item.get("memory")
            if not isinstance(text, str):
                data = item.get("data")
                text = data.get("memory") if isinstance(data, Mapping) else None
            if not isinstance(text, str) or "id" not in item:
                continue
            out.append(
                MemoryRecord(
                    id=str(item["id"]),
                    text=text,
                    user_id=user_id,
                    agent_id=agent_id,
                    session_id=session_id,
                    created_at=_parse_time(item.get("created_at")) or now,
                )
            )
        return out

    def search(
        self,
        tenant_id: str,
        query: str,
        *,
        user_id: str,
        agent_id: str | None = None,
        limit: int = 5,
    ) -> builtins.list[MemoryRecord]:
        scope = _scope(tenant_id)
        _check_entity("user_id", user_id)
        _check_optional_entity("agent_id", agent_id)
        _check_limit(limit)
        if limit == 0 or not query.strip():
            return []
        items = self._backend.search(
            query,
            tenant=tenant_id,
            user_id=scope.wrap(user_id),
            agent_id=None if agent_id is None else scope.wrap(agent_id),
            limit=limit,
        )
        records = [_record(scope, item) for item in items if scope.owns(item)]
        records.sort(key=lambda r: r.score or 0.0, reverse=True)
        return records[:limit]

    def list(
        self,
        tenant_id: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[MemoryRecord]:
        scope = _scope(tenant_id)
        _check_optional_entity("user_id", user_id)
        _check_optional_entity("agent_id", agent_id)
        _check_limit(limit)
        if limit == 0:
            return []
        items = self._backend.list(
            tenant=tenant_id,
            user_id=None if user_id is None else scope.wrap(user_id),
            agent_id=None if agent_id is None else scope.wrap(agent_id),
            limit=limit,
        )
        records = [_record(scope, item, score=False) for item in items if scope.owns(item)]
        records.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return records[:limit]

    def delete(self, tenant_id: str, memory_id: str) -> bool:
        scope = _scope(tenant_id)
        item = self._backend.get(memory_id)
        if item is None or not scope.owns(item):
            return False
        return self._backend.delete(memory_id)

    def clear(
        self, tenant_id: str, *, user_id: str | None = None, agent_id: str | None = None
    ) -> int:
        scope = _scope(tenant_id)
        if user_id is None and agent_id is None:
            raise InvalidMemoryArgument("user_id", "clear needs user_id, agent_id or both")
        _check_optional_entity("user_id", user_id)
        _check_optional_entity("agent_id", agent_id)
        return self._backend.clear(
            tenant=tenant_id,
            user_id=None if user_id is None else scope.wrap(user_id),
            agent_id=None if agent_id is None else scope.wrap(agent_id),
            owns=scope.owns,
        )


# -- backends ------------------------------------------------------------------------------


class _Backend:
    """What `Mem0Memory` needs from either mem0 flavour, on raw (namespaced) ids."""

    def add(
        self,
        messages: builtins.list[dict[str, str]],
        *,
        tenant: str,
        user_id: str,
        agent_id: str,
        metadata: dict[str, Any],
        infer: bool,
    ) -> builtins.list[dict[str, Any]]:
        raise NotImplementedError

    def search(
        self, query: str, *, tenant: str, user_id: str, agent_id: str | None, limit: int
    ) -> builtins.list[dict[str, Any]]:
        raise NotImplementedError

    def list(
        self, *, tenant: str, user_id: str | None, agent_id: str | None, limit: int
    ) -> builtins.list[dict[str, Any]]:
        raise NotImplementedError

    def get(self, memory_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def delete(self, memory_id: str) -> bool:
        raise NotImplementedError

    def clear(
        self,
        *,
        tenant: str,
        user_id: str | None,
        agent_id: str | None,
        owns: _Owns,
    ) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _OssBackend(_Backend):
    """`mem0.Memory`, one call at a time: it loses writes under concurrency otherwise."""

    def __init__(self, memory: Any) -> None:
        self.memory = memory
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        with self._lock:
            yield self.memory

    @staticmethod
    def _filters(tenant: str, user_id: str | None, agent_id: str | None) -> dict[str, Any]:
        filters: dict[str, Any] = {}
        if user_id is not None:
            filters["user_id"] = user_id
        if agent_id is not None:
            filters["agent_id"] = agent_id
        if not filters:  # mem0 wants an entity key; "*" matches any, the tenant narrows
            filters = {"user_id": "*", _TENANT_KEY: tenant}
        return filters

    def add(
        self,
        messages: builtins.list[dict[str, str]],
        *,
        tenant: str,
        user_id: str,
        agent_id: str,
        metadata: dict[str, Any],
        infer: bool,
    ) -> builtins.list[dict[str, Any]]:
        with self._locked() as m:
            result = m.add(
                messages, user_id=user_id, agent_id=agent_id, metadata=metadata, infer=infer
            )
        return _results(result)

    def search(
        self, query: str, *, tenant: str, user_id: str, agent_id: str | None, limit: int
    ) -> builtins.list[dict[str, Any]]:
        filters = self._filters(tenant, user_id, agent_id)
        with self._locked() as m:
            # threshold 0: rank and cut at `limit`, as the local provider does.
            return _results(m.search(query, filters=filters, top_k=limit, threshold=0.0))

    def list(
        self, *, tenant: str, user_id: str | None, agent_id: str | None, limit: int
    ) -> builtins.list[dict[str, Any]]:
        filters = self._filters(tenant, user_id, agent_id)
        with self._locked() as m:
            return _results(m.get_all(filters=filters, top_k=max(limit, _OSS_SCAN_LIMIT)))

    def get(self, memory_id: str) -> dict[str, Any] | None:
        try:
            uuid.UUID(memory_id)  # Qdrant raises on ids that are not UUIDs
        except (TypeError, ValueError):
            return None
        with self._locked() as m:
            found = m.get(memory_id)
        return found if isinstance(found, dict) else None

    def delete(self, memory_id: str) -> bool:
        with self._locked() as m:
            try:
                m.delete(memory_id)
            except ValueError:  # deleted meanwhile
                return False
        return True

    def clear(self, *, tenant: str, user_id: str | None, agent_id: str | None, owns: _Owns) -> int:
        filters = self._filters(tenant, user_id, agent_id)
        removed = 0
        with self._locked() as m:
            while True:
                batch = [
                    i for i in _results(m.get_all(filters=filters, top_k=_BATCH_DELETE)) if owns(i)
                ]
                if not batch:
                    return removed
                for item in batch:
                    m.delete(item["id"])
                removed += len(batch)

    def close(self) -> None:
        with self._locked() as m:
            m.close()
            client = getattr(getattr(m, "vector_store", None), "client", None)
            if client is not None:  # else Qdrant keeps its folder lock until exit
                client.close()


class _HostedBackend(_Backend):
    """`mem0.MemoryClient`. No lock: httpx clients are thread-safe and the platform
    serialises its own writes, so a lock would only queue network round trips."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @staticmethod
    def _filters(tenant: str, user_id: str | None, agent_id: str | None) -> dict[str, Any]:
        # Every entity the platform knows must be named (unnamed ones must be null).
        return {
            "AND": [
                {"app_id": tenant},
                {"user_id": user_id if user_id is not None else "*"},
                {"agent_id": agent_id if agent_id is not None else "*"},
            ]
        }

    def add(
        self,
        messages: builtins.list[dict[str, str]],
        *,
        tenant: str,
        user_id: str,
        agent_id: str,
        metadata: dict[str, Any],
        infer: bool,
    ) -> builtins.list[dict[str, Any]]:
        result = self.client.add(
            messages,
            user_id=user_id,
            agent_id=agent_id,
            app_id=tenant,
            metadata=metadata,
            infer=infer,
        )
        # infer=True answers {"status": "PENDING", "event_id": …}: nothing stored yet.
        return _results(result)

    def search(
        self, query: str, *, tenant: str, user_id: str, agent_id: str | None, limit: int
    ) -> builtins.list[dict[str, Any]]:
        filters = self._filters(tenant, user_id, agent_id)
        return _results(self.client.search(query, filters=filters, top_k=limit, threshold=0.0))

    def _pages(
        self, tenant: str, user_id: str | None, agent_id: str | None
    ) -> Iterator[builtins.list[dict[str, Any]]]:
        filters = self._filters(tenant, user_id, agent_id)
        page = 1
        while True:
            result = self.client.get_all(filters=filters, page=page, page_size=_PAGE_SIZE)
            items = _results(result)
            yield items
            if not items or not (isinstance(result, dict) and result.get("next")):
                return
            page += 1

    def list(
        self, *, tenant: str, user_id: str | None, agent_id: str | None, limit: int
    ) -> builtins.list[dict[str, Any]]:
        out: builtins.list[dict[str, Any]] = []
        for items in self._pages(tenant, user_id, agent_id):
            out.extend(items)
            if len(out) >= limit:
                break
        return out

    def get(self, memory_id: str) -> dict[str, Any] | None:
        errors = _mem0_errors()
        try:
            found = self.client.get(memory_id)
        except (errors.MemoryNotFoundError, errors.ValidationError):
            return None
        return found if isinstance(found, dict) else None

    def delete(self, memory_id: str) -> bool:
        try:
            self.client.delete(memory_id)
        except _mem0_errors().MemoryNotFoundError:
            return False
        return True

    def clear(self, *, tenant: str, user_id: str | None, agent_id: str | None, owns: _Owns) -> int:
        removed = 0
        seen: set[str] = set()
        while True:  # always page 1: each batch deleted shifts the rest forward
            batch = [
                str(i["id"])
                for i in next(self._pages(tenant, user_id, agent_id))
                if owns(i) and str(i["id"]) not in seen
            ]
            if not batch:
                return removed
            seen.update(batch)
            for start in range(0, len(batch), _BATCH_DELETE):
                chunk = batch[start : start + _BATCH_DELETE]
                self.client.batch_delete([{"memory_id": i} for i in chunk])
            removed += len(batch)

    def close(self) -> None:
        self.client.client.close()


# -- helpers -------------------------------------------------------------------------------


def _mem0() -> Any:
    """mem0, imported on first use: after `prepare_mem0_env`, and never for `local`."""
    import mem0  # type: ignore[import-untyped]

    return mem0


def _mem0_errors() -> Any:
    import mem0.exceptions  # type: ignore[import-untyped]

    return mem0.exceptions


def _scope(tenant_id: str) -> _Scope:
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise InvalidMemoryArgument("tenant_id", "must be a non-empty string")
    if ":" in tenant_id or any(c.isspace() for c in tenant_id):
        raise InvalidMemoryArgument("tenant_id", "must not contain ':' or whitespace for mem0")
    return _Scope(tenant_id)


def _check_entity(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidMemoryArgument(name, "must be a non-empty string")
    if any(c.isspace() for c in value):  # mem0 rejects ids with whitespace
        raise InvalidMemoryArgument(name, "must not contain whitespace for mem0")


def _check_optional_entity(name: str, value: str | None) -> None:
    if value is not None:
        _check_entity(name, value)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidMemoryArgument("limit", "must be a non-negative integer")


def _results(result: Any) -> builtins.list[dict[str, Any]]:
    """mem0 answers `{"results": [...]}`, older platform versions a bare list."""
    items = result.get("results") if isinstance(result, dict) else result
    if not isinstance(items, builtins.list):
        return []
    return [i for i in items if isinstance(i, dict)]


def _record(scope: _Scope, item: Mapping[str, Any], *, score: bool = True) -> MemoryRecord:
    meta = item.get("metadata") or {}
    if not isinstance(meta, Mapping):
        meta = {}
    session = meta.get(_SESSION_KEY)
    raw_score = item.get("score") if score else None
    return MemoryRecord(
        id=str(item["id"]),
        text=str(item.get("memory") or ""),
        user_id=scope.unwrap(item.get("user_id")),
        agent_id=scope.unwrap(item.get("agent_id")),
        session_id=session if isinstance(session, str) else None,
        created_at=_parse_time(item.get("created_at")) or datetime.fromtimestamp(0, UTC),
        score=float(raw_score) if isinstance(raw_score, int | float) else None,
    )


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
