"""One contract for every `MemoryProvider`, run against each of them.

Providers under test, all offline:

* `local` on the shared `db` fixture: SQLite always, PostgreSQL when TEST_DATABASE_URL is set;
* `mem0-oss`: mem0's own `Memory` with `infer=False`, our embedder plugged in, an on-disk
  Qdrant under tmp_path;
* `mem0-hosted`: the real `mem0.MemoryClient` against `tests/fakes/mem0_platform.py`
  through an `httpx.MockTransport`.

Every test uses a fresh tenant id, so tests that must commit (threads need their own
connections) cannot collide with each other. Provider-specific behaviour is tested after
the contract.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select, update

from core.db import Database, make_engine
from core.db.models import MemoryRow
from core.embeddings import HashingEmbedder, MiniLMEmbedder, is_available
from core.embeddings.port import Embedder
from core.errors import ValidationFailed
from core.memory.local import LocalMemory
from core.memory.mem0_provider import Mem0Memory, build_mem0
from core.memory.port import InvalidMemoryArgument, MemoryMessage, MemoryProvider
from tests.conftest import BACKENDS
from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply
from tests.fakes.mem0_platform import FakeMem0Platform

API_KEY = "m0-test-key"

CONTRACT = pytest.mark.parametrize(
    ("provider_kind", "migrated_engine"),
    [
        *(pytest.param("local", b, id=f"local-{b}") for b in BACKENDS),
        pytest.param("mem0-oss", "sqlite", id="mem0-oss"),
        pytest.param("mem0-hosted", "sqlite", id="mem0-hosted"),
    ],
    indirect=["migrated_engine"],
    scope="session",  # group by database so each engine is built once
)
LOCAL = pytest.mark.parametrize(
    "migrated_engine", [pytest.param(b, id=f"local-{b}") for b in BACKENDS], indirect=True
)


def user(text: str) -> MemoryMessage:
    return MemoryMessage("user", text)


def assistant(text: str) -> MemoryMessage:
    return MemoryMessage("assistant", text)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real model when installed (it is in CI), else the lexical fallback."""
    return MiniLMEmbedder() if is_available() else HashingEmbedder()


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@dataclass
class Providers:
    """Makes provider instances over one storage, so a test can 'restart' the provider."""

    kind: str
    _make: Callable[[bool], MemoryProvider]
    _before_new: Callable[[], None] = lambda: None
    opened: list[MemoryProvider] = field(default_factory=list)

    def new(self, *, committed: bool = False) -> MemoryProvider:
        """A fresh instance; `committed` for local means real transactions (for threads)."""
        self._before_new()
        provider = self._make(committed)
        self.opened.append(provider)
        return provider

    def close(self) -> None:
        for provider in self.opened:
            if isinstance(provider, Mem0Memory):
                provider.close()


@pytest.fixture
def providers(
    request: pytest.FixtureRequest,
    provider_kind: str,
    migrated_engine: Engine,
    tmp_path: Path,
    embedder: Embedder,
    tenant: str,
) -> Iterator[Providers]:
    cleanup: list[Callable[[], None]] = []
    if provider_kind == "local":
        committed_db = Database(migrated_engine)

        def make_local(committed: bool) -> MemoryProvider:
            if not committed:  # rolled back after the test; opened lazily because on
                # SQLite its open write transaction would block committing threads
                return LocalMemory(request.getfixturevalue("db"), embedder)

            def purge() -> None:
                with committed_db.session() as s:
                    s.execute(delete(MemoryRow).where(MemoryRow.tenant_id.like(f"{tenant}%")))

            cleanup.append(purge)
            return LocalMemory(committed_db, embedder)

        made = Providers(provider_kind, make_local)
    elif provider_kind == "mem0-oss":
        made = Providers(
            provider_kind,
            lambda _committed: build_mem0(data_dir=tmp_path, embedder=embedder, infer=False),
        )
        # One Qdrant folder admits one client: a "restart" closes the previous instance.
        made._before_new = made.close
    else:
        platform = FakeMem0Platform(api_key=API_KEY)
        made = Providers(
            provider_kind,
            lambda _committed: build_mem0(
                data_dir=tmp_path, api_key=API_KEY, http_client=platform.client(), infer=False
            ),
        )
    yield made
    made.close()
    for step in cleanup:
        step()


@pytest.fixture
def memory(providers: Providers) -> MemoryProvider:
    return providers.new()


# -- the contract --------------------------------------------------------------------------


@CONTRACT
def test_a_stored_fact_is_found_and_beats_unrelated_memories(
    memory: MemoryProvider, tenant: str
) -> None:
    memory.add(
        tenant, [user("The quarterly budget review moved to Thursday")], user_id="U1", agent_id="A1"
    )
    memory.add(tenant, [user("My favourite colour is teal")], user_id="U1", agent_id="A1")
    memory.add(tenant, [user("I am allergic to peanuts")], user_id="U1", agent_id="A1")

    found = memory.search(tenant, "favourite colour", user_id="U1", agent_id="A1", limit=3)

    assert found, "search found nothing"
    assert found[0].text == "My favourite colour is teal"
    assert found[0].score is not None
    assert all(r.score is not None and r.score <= found[0].score for r in found)


@CONTRACT
def test_add_keeps_the_user_words_and_a_compact_assistant_note(
    memory: MemoryProvider, tenant: str
) -> None:
    long_reply = "Sure thing. " + "I have noted your preference for Friday deploys. " * 20

    stored = memory.add(
        tenant,
        [user("Please deploy   on Fridays only"), assistant(long_reply)],
        user_id="U1",
        agent_id="A1",
        session_id="ses_1",
    )

    assert len(stored) == 2
    assert stored[0].text == "Please deploy on Fridays only"
    note = stored[1].text
    assert note.startswith("assistant: Sure thing.") and note.endswith("…")
    assert len(note) <= 280
    assert {(r.user_id, r.agent_id, r.session_id) for r in stored} == {("U1", "A1", "ses_1")}
    listed = memory.list(tenant, user_id="U1")
    assert {r.id for r in listed} == {r.id for r in stored}
    assert {r.session_id for r in listed} == {"ses_1"}


@CONTRACT
def test_an_empty_exchange_stores_nothing(memory: MemoryProvider, tenant: str) -> None:
    assert memory.add(tenant, [user("   "), assistant("")], user_id="U1", agent_id="A1") == []
    assert memory.list(tenant, user_id="U1") == []


@CONTRACT
def test_search_sees_only_the_users_memories_and_narrows_by_agent(
    memory: MemoryProvider, tenant: str
) -> None:
    memory.add(tenant, [user("My favourite colour is teal")], user_id="U1", agent_id="A1")
    memory.add(tenant, [user("My favourite colour is orange")], user_id="U1", agent_id="A2")
    memory.add(tenant, [user("My favourite colour is crimson")], user_id="U2", agent_id="A1")

    def texts(user_id: str, agent_id: str | None = None) -> set[str]:
        found = memory.search(
            tenant, "favourite colour", user_id=user_id, agent_id=agent_id, limit=10
        )
        return {r.text for r in found}

    assert texts(user_id="U1", agent_id="A1") == {"My favourite colour is teal"}
    assert texts(user_id="U1", agent_id=None) == {
        "My favourite colour is teal",
        "My favourite colour is orange",
    }
    assert texts(user_id="U2") == {"My favourite colour is crimson"}
    assert texts(user_id="U3") == set()
    hits = memory.search(tenant, "favourite colour", user_id="U1", agent_id="A2")
    assert [(r.user_id, r.agent_id) for r in hits] == [("U1", "A2")]


@CONTRACT
def test_a_tenant_never_sees_or_touches_another_tenants_memories(
    memory: MemoryProvider, tenant: str
) -> None:
    other = tenant + "x"
    mine = memory.add(tenant, [user("My favourite colour is teal")], user_id="U1", agent_id="A1")
    theirs = memory.add(other, [user("My favourite colour is teal")], user_id="U1", agent_id="A1")

    assert [r.id for r in memory.search(tenant, "favourite colour", user_id="U1")] == [mine[0].id]
    assert [r.id for r in memory.list(tenant)] == [mine[0].id]
    assert [r.id for r in memory.list(other, agent_id="A1")] == [theirs[0].id]
    assert memory.delete(other, mine[0].id) is False
    assert memory.clear(other, user_id="U1") == 1
    assert [r.id for r in memory.list(tenant, user_id="U1")] == [mine[0].id]


@CONTRACT
def test_list_narrows_by_user_and_agent_newest_first(memory: MemoryProvider, tenant: str) -> None:
    first = memory.add(tenant, [user("first fact")], user_id="U1", agent_id="A1")[0]
    second = memory.add(tenant, [user("second fact")], user_id="U1", agent_id="A2")[0]
    third = memory.add(tenant, [user("third fact")], user_id="U2", agent_id="A1")[0]

    assert [r.id for r in memory.list(tenant, user_id="U1")] == [second.id, first.id]
    assert [r.id for r in memory.list(tenant, agent_id="A1")] == [third.id, first.id]
    assert [r.id for r in memory.list(tenant, user_id="U1", agent_id="A2")] == [second.id]
    assert [r.id for r in memory.list(tenant)] == [third.id, second.id, first.id]
    assert [r.id for r in memory.list(tenant, limit=2)] == [third.id, second.id]
    listed = memory.list(tenant, user_id="U2")[0]
    assert (listed.text, listed.user_id, listed.agent_id) == ("third fact", "U2", "A1")


@CONTRACT
def test_delete_removes_exactly_one_memory(memory: MemoryProvider, tenant: str) -> None:
    keep, drop = memory.add(
        tenant, [user("keep this"), user("forget this")], user_id="U1", agent_id="A1"
    )

    assert memory.delete(tenant, drop.id) is True
    assert memory.delete(tenant, drop.id) is False
    assert memory.delete(tenant, str(uuid.uuid4())) is False
    assert memory.delete(tenant, "not-an-id") is False
    assert [r.id for r in memory.list(tenant, user_id="U1")] == [keep.id]
    assert drop.id not in {r.id for r in memory.search(tenant, "forget this", user_id="U1")}


@CONTRACT
def test_clear_by_user_by_agent_or_both(memory: MemoryProvider, tenant: str) -> None:
    for u in ("U1", "U2"):
        for a in ("A1", "A2"):
            memory.add(tenant, [user(f"note for {u} from {a}")], user_id=u, agent_id=a)

    assert memory.clear(tenant, user_id="U1", agent_id="A2") == 1
    assert memory.clear(tenant, agent_id="A1") == 2
    assert {r.text for r in memory.list(tenant)} == {"note for U2 from A2"}
    assert memory.clear(tenant, user_id="U2") == 1
    assert memory.list(tenant) == []
    assert memory.search(tenant, "note", user_id="U2") == []


@CONTRACT
def test_memories_survive_a_new_provider_instance(providers: Providers, tenant: str) -> None:
    before = providers.new()
    stored = before.add(tenant, [user("My favourite colour is teal")], user_id="U1", agent_id="A1")
    before.search(tenant, "favourite colour", user_id="U1", agent_id="A1")  # warm any cache

    after = providers.new()

    found = after.search(tenant, "favourite colour", user_id="U1", agent_id="A1")
    assert [r.id for r in found] == [stored[0].id]
    assert [r.id for r in after.list(tenant, user_id="U1")] == [stored[0].id]


@CONTRACT
def test_eight_threads_adding_at_once_lose_nothing(providers: Providers, tenant: str) -> None:
    memory = providers.new(committed=True)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(5):
                memory.add(
                    tenant,
                    [user(f"worker {n} fact {i}"), assistant(f"noted fact {i} of worker {n}")],
                    user_id="U1",
                    agent_id="A1",
                    session_id=f"ses_{n}",
                )
                memory.search(tenant, f"worker {n}", user_id="U1", agent_id="A1")
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    listed = memory.list(tenant, user_id="U1", limit=1000)
    assert len(listed) == len({r.id for r in listed}) == 8 * 5 * 2
    assert {r.text for r in listed} >= {f"worker {n} fact {i}" for n in range(8) for i in range(5)}
    found = memory.search(tenant, "worker 7 fact 3", user_id="U1", agent_id="A1", limit=1000)
    assert len(found) > 0 and "worker 7 fact 3" in {r.text for r in found}


@CONTRACT
def test_bad_arguments_are_rejected(memory: MemoryProvider, tenant: str) -> None:
    with pytest.raises(InvalidMemoryArgument) as raised:
        memory.clear(tenant)  # neither user nor agent: never "everything"
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, ValidationFailed)
    with pytest.raises(ValueError):
        memory.add("", [user("x")], user_id="U1", agent_id="A1")
    with pytest.raises(ValueError):
        memory.add(tenant, [user("x")], user_id="", agent_id="A1")
    with pytest.raises(ValueError):
        memory.search(tenant, "x", user_id="U1", limit=-1)
    assert memory.search(tenant, "x", user_id="U1", limit=0) == []
    assert memory.search(tenant, "   ", user_id="U1") == []


# -- local provider ------------------------------------------------------------------------


@pytest.fixture
def committed_db(migrated_engine: Engine, tenant: str) -> Iterator[Database]:
    database = Database(migrated_engine)
    yield database
    with database.session() as s:
        s.execute(delete(MemoryRow).where(MemoryRow.tenant_id == tenant))


@LOCAL
def test_local_sees_what_another_process_wrote_and_deleted(
    migrated_engine: Engine, committed_db: Database, embedder: Embedder, tenant: str
) -> None:
    here = LocalMemory(committed_db, embedder)
    elsewhere_engine = make_engine(migrated_engine.url.render_as_string(hide_password=False))
    try:
        elsewhere = LocalMemory(Database(elsewhere_engine), embedder)
        here.add(tenant, [user("The office wifi password is hunter2")], user_id="U1", agent_id="A1")
        assert len(here.search(tenant, "wifi password", user_id="U1", agent_id="A1")) == 1

        added = elsewhere.add(
            tenant, [user("The guest wifi password is swordfish")], user_id="U1", agent_id="A1"
        )
        found = here.search(tenant, "guest wifi password", user_id="U1", agent_id="A1")
        assert found[0].id == added[0].id

        assert elsewhere.delete(tenant, added[0].id)
        found = here.search(tenant, "guest wifi password", user_id="U1", agent_id="A1")
        assert added[0].id not in {r.id for r in found}
    finally:
        elsewhere_engine.dispose()


@LOCAL
def test_local_exact_identifiers_outrank_lookalikes(
    db: Database, embedder: Embedder, tenant: str
) -> None:
    memory = LocalMemory(db, embedder)
    for text in (
        "Ticket ABC-1243 was closed yesterday",
        "Ticket ABC-1234 is blocked on legal review",
        "Ticket ABC-2134 needs a new owner",
    ):
        memory.add(tenant, [user(text)], user_id="U1", agent_id="A1")

    found = memory.search(tenant, "what is happening with ABC-1234?", user_id="U1", agent_id="A1")

    assert found[0].text == "Ticket ABC-1234 is blocked on legal review"


@LOCAL
def test_local_without_an_embedder_ranks_by_words(db: Database, tenant: str) -> None:
    memory = LocalMemory(db, None)
    memory.add(tenant, [user("My favourite colour is teal")], user_id="U1", agent_id="A1")
    memory.add(tenant, [user("The budget review moved to Thursday")], user_id="U1", agent_id="A1")

    found = memory.search(tenant, "which colour is my favourite", user_id="U1", agent_id="A1")

    assert memory.mode == "lexical"
    assert [r.text for r in found] == ["My favourite colour is teal"]  # no word in common: dropped
    with db.session() as s:
        assert (
            s.scalar(
                select(func.count()).where(
                    MemoryRow.tenant_id == tenant, MemoryRow.embedding.is_not(None)
                )
            )
            == 0
        )


@LOCAL
def test_local_re_embeds_memories_stored_by_another_model(
    db: Database, embedder: Embedder, tenant: str
) -> None:
    LocalMemory(db, None).add(
        tenant, [user("My favourite colour is teal")], user_id="U1", agent_id="A1"
    )
    with db.session() as s:
        s.execute(
            update(MemoryRow).where(MemoryRow.tenant_id == tenant).values(embedding_model="old")
        )

    memory = LocalMemory(db, embedder)
    assert memory.search(tenant, "favourite colour", user_id="U1", agent_id="A1")

    with db.session() as s:
        models = set(
            s.scalars(select(MemoryRow.embedding_model).where(MemoryRow.tenant_id == tenant))
        )
    assert models == {embedder.model_name}


# -- mem0 provider -------------------------------------------------------------------------


def test_hosted_mem0_with_inference_queues_the_exchange(tmp_path: Path, tenant: str) -> None:
    platform = FakeMem0Platform(api_key=API_KEY)
    memory = build_mem0(data_dir=tmp_path, api_key=API_KEY, http_client=platform.client())
    try:
        assert memory.infer is True
        stored = memory.add(
            tenant, [user("I prefer tea"), assistant("Noted!")], user_id="U1", agent_id="A1"
        )

        assert stored == []  # the platform extracts asynchronously; nothing to report yet
        method, path, body = platform.requests[-1]
        assert (method, path, body["infer"], body["app_id"]) == (
            "POST",
            "/v3/memories/add/",
            True,
            tenant,
        )
        assert body["user_id"] == f"{tenant}:U1" and body["agent_id"] == f"{tenant}:A1"
        assert body["messages"][1] == {"role": "assistant", "content": "Noted!"}
        assert [r.text for r in memory.list(tenant, user_id="U1")] == ["I prefer tea"]
    finally:
        memory.close()


def test_oss_mem0_with_claude_extracts_facts_without_sampling_parameters(
    tmp_path: Path, embedder: Embedder, tenant: str
) -> None:
    with FakeAnthropicAPI() as claude:
        claude.push(Reply.text('{"memory": [{"text": "Prefers deploys on Fridays"}]}'))
        memory = build_mem0(
            data_dir=tmp_path,
            embedder=embedder,
            anthropic_api_key="sk-ant-test",
            anthropic_base_url=claude.base_url,
            model="claude-sonnet-4-6",
        )
        try:
            assert memory.infer is True
            stored = memory.add(
                tenant,
                [user("Only deploy on Fridays please"), assistant("Will do.")],
                user_id="U1",
                agent_id="A1",
                session_id="ses_1",
            )

            assert [(r.text, r.user_id, r.session_id) for r in stored] == [
                ("Prefers deploys on Fridays", "U1", "ses_1")
            ]
            (request,) = claude.requests
            assert "temperature" not in request.body and "top_p" not in request.body
            found = memory.search(tenant, "when to deploy", user_id="U1", agent_id="A1")
            assert [r.text for r in found] == ["Prefers deploys on Fridays"]
        finally:
            memory.close()


def test_closing_oss_mem0_releases_the_qdrant_folder(tmp_path: Path, embedder: Embedder) -> None:
    first = build_mem0(data_dir=tmp_path, embedder=embedder)
    first.close()
    second = build_mem0(data_dir=tmp_path, embedder=embedder)  # would raise if still locked
    second.close()
