"""The canonical form behind audit hashes and receipt signatures: stable across key order
and Unicode, pinned by known answers (outsiders and migration 0008 depend on it)."""

from __future__ import annotations

import base64
import importlib.util
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.approvals.audit import GENESIS, HASHED_FIELDS, AuditEntry, entry_hash
from core.approvals.canonical import canonical_bytes, sha256_hex, storable_text, timestamp
from core.approvals.receipts import ReceiptSigner, load_public_key

ROOT = Path(__file__).resolve().parents[2]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(json_values, st.randoms(use_true_random=False))
def test_key_order_never_changes_the_hash(value: Any, rng: random.Random) -> None:
    assert canonical_bytes(shuffled(value, rng)) == canonical_bytes(value)
    assert sha256_hex(shuffled(value, rng)) == sha256_hex(value)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_the_canonical_form_is_plain_utf8_json_that_parses_back(value: Any) -> None:
    data = canonical_bytes(value)
    assert json.loads(data.decode("utf-8")) == value
    # Compact and key-sorted: re-serialising what it parses to gives the same bytes. (A
    # byte search for ": " would be wrong: strings may hold that text.)
    compact = json.dumps(
        json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert data == compact
    assert b"\n" not in data


entries = st.builds(
    AuditEntry,
    id=st.text(min_size=1, max_size=30),
    tenant_id=st.text(min_size=1, max_size=10),
    seq=st.integers(min_value=1, max_value=2**62),
    output_id=st.none() | st.text(max_size=30),
    actor=st.text(max_size=50),
    identity=st.sampled_from([None, "verified", "asserted", "system"]),
    via=st.sampled_from([None, "slack", "api", "webhook", "system"]),
    key_id=st.none() | st.text(max_size=20),
    key_name=st.none() | st.text(max_size=20),
    action=st.text(max_size=10),
    outcome=st.text(max_size=10),
    revision=st.none() | st.integers(min_value=1, max_value=10_000),
    content_sha256=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    detail=st.none() | st.text(max_size=200),
    created_at=st.datetimes(timezones=st.just(UTC)),
    prev_hash=st.just(GENESIS),
    entry_hash=st.just(""),
)


@settings(max_examples=200, deadline=None)
@given(entries, st.randoms(use_true_random=False))
def test_an_entry_hashes_the_same_after_a_json_round_trip_in_any_key_order(
    entry: AuditEntry, rng: random.Random
) -> None:
    dumped = json.loads(entry.model_dump_json())
    again = AuditEntry.model_validate(shuffled(dumped, rng))
    assert entry_hash(again) == entry_hash(entry)


@settings(max_examples=200, deadline=None)
@given(entries, st.sampled_from(HASHED_FIELDS))
def test_every_hashed_field_changes_the_hash(entry: AuditEntry, name: str) -> None:
    changed: object = {
        "seq": entry.seq + 1,
        "revision": (entry.revision or 0) + 1,
        "created_at": entry.created_at.replace(year=2000)
        if entry.created_at.year != 2000
        else entry.created_at.replace(year=2001),
        "identity": "asserted" if entry.identity != "asserted" else "verified",
        "via": "api" if entry.via != "api" else "slack",
    }.get(name, f"{getattr(entry, name)}x")
    assert entry_hash(entry.model_copy(update={name: changed})) != entry_hash(entry)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("café", "café"),  # the same code points
        ("Zoë ✓ 日本語 \U0001f600", "Zoë ✓ 日本語 \U0001f600"),
    ],
)
def test_unicode_is_hashed_as_its_utf8_bytes(left: str, right: str) -> None:
    assert canonical_bytes({"t": left}) == b'{"t":"' + right.encode("utf-8") + b'"}'


def test_composed_and_decomposed_accents_are_different_text() -> None:
    # No normalization: what was stored is what was hashed, byte for byte.
    assert sha256_hex({"t": "caf\u00e9"}) != sha256_hex({"t": "cafe\u0301"})


def test_timestamps_have_one_form_whatever_the_zone() -> None:
    moment = datetime(2026, 12, 1, 9, 30, 0, 7, tzinfo=UTC)
    paris = moment.astimezone(timezone(timedelta(hours=1)))
    assert timestamp(moment) == timestamp(paris) == "2026-12-01T09:30:00.000007Z"
    with pytest.raises(ValueError, match="naive"):
        timestamp(datetime(2026, 12, 1))


def test_text_no_backend_could_store_is_made_storable() -> None:
    assert storable_text("a\x00b\ud800c") == "a\ufffdb?c"
    assert storable_text("Zoë ✓") == "Zoë ✓"


def test_a_known_entry_has_a_known_hash() -> None:
    """Pinned: changing the canonical form silently would break every stored chain."""
    entry = AuditEntry(
        id="aud_1", tenant_id="T", seq=1, output_id="out_1", actor="U1", identity="asserted",
        via="api", key_id=None, key_name=None, action="approve", outcome="applied",
        revision=1, content_sha256="a" * 64, detail="Zoë ✓",
        created_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC), prev_hash=GENESIS, entry_hash="",
    )  # fmt: skip
    assert entry_hash(entry) == KNOWN_ENTRY_HASH


# Computed by hand from the documented form (docs/security.md).
KNOWN_ENTRY_HASH = "1cf78666b35156add8a8828c990542b2c62b245de1761e4d3174c109f1d48a41"


def test_the_migration_chains_old_entries_with_the_same_hash() -> None:
    path = ROOT / "migrations" / "versions" / "0008_audit_chain.py"
    spec = importlib.util.spec_from_file_location("migration_0008", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    fields: dict[str, Any] = {
        "id": "aud_1", "tenant_id": "T", "seq": 3, "prev_hash": "b" * 64, "output_id": None,
        "actor": "U1", "identity": None, "via": "slack", "key_id": None, "key_name": None,
        "action": "reject", "outcome": "applied", "revision": None, "content_sha256": None,
        "detail": "entrée", "created_at": datetime(2026, 11, 1, 12, 0, 0, 5),  # naive: SQLite
    }  # fmt: skip
    aware = AuditEntry(**{**fields, "created_at": fields["created_at"].replace(tzinfo=UTC)},
                       entry_hash="")  # fmt: skip
    assert migration._hash(fields) == entry_hash(aware)


def test_the_receipt_key_is_derived_from_the_secret_and_stable() -> None:
    """Pinned: a change in derivation would orphan every receipt already signed."""
    signer = ReceiptSigner("test-secret-key")
    assert signer.key_id == KNOWN_KEY_ID
    assert ReceiptSigner("test-secret-key").public_raw == signer.public_raw
    assert ReceiptSigner("another").key_id != signer.key_id
    assert load_public_key(signer.public_pem) == signer.public_raw
    assert load_public_key(base64.b64encode(signer.public_raw).decode()) == signer.public_raw
    for bad in ("nope", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError):
            load_public_key(bad)


KNOWN_KEY_ID = "0db19a482ac53ddb"
