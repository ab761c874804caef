"""Standard Webhooks signing: the spec's known answer, interop with the reference library,
and hostile headers that must fail as SignatureInvalid and nothing else."""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from core.errors import CosmoError
from core.webhooks.signing import (
    SignatureInvalid,
    generate_secret,
    new_message_id,
    parse_secret,
    sign,
    signed_headers,
    verify,
)

# The test vector published with the Standard Webhooks reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_700_000_000
BODY = b'{"type":"output.approved","data":{"id":"out_1"}}'


@pytest.fixture
def secret() -> str:
    return generate_secret()


def headers_for(secret: str | list[str], body: bytes = BODY, now: int = NOW) -> dict[str, str]:
    return signed_headers(secret, "msg_test1", body, now=now)


# --- Known answer and interop -------------------------------------------------------


def test_spec_known_answer() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE


def test_spec_known_answer_verifies() -> None:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TS),
        "webhook-signature": SPEC_SIGNATURE,
    }
    verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TS)


def test_reference_library_verifies_our_signature(secret: str) -> None:
    # The reference library checks the timestamp against the real clock.
    headers = signed_headers(secret, new_message_id(), BODY)
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "output.approved",
        "data": {"id": "out_1"},
    }


def test_reference_library_verifies_every_rotated_signature() -> None:
    old, new = generate_secret(), generate_secret()
    headers = signed_headers([new, old], new_message_id(), BODY)
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def test_reference_library_rejects_a_tampered_body(secret: str) -> None:
    headers = signed_headers(secret, new_message_id(), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)


def test_we_verify_the_reference_library_signature(secret: str) -> None:
    now = int(time.time())
    signature = Webhook(secret).sign("msg_ref", datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    headers = {
        "webhook-id": "msg_ref",
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
    }
    verify(secret, headers, BODY)


# --- Secrets and ids -----------------------------------------------------------------


def test_generated_secret_is_a_whsec_of_32_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(parse_secret(secret)) == 32
    assert generate_secret() != secret


def test_parse_secret_decodes_the_key() -> None:
    assert parse_secret(SPEC_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def test_parse_secret_tolerates_missing_padding_and_surrounding_whitespace() -> None:
    key = bytes(range(25))  # 25 bytes: its base64 ends in "=="
    encoded = base64.b64encode(key).decode()
    assert encoded.endswith("==")
    assert parse_secret("whsec_" + encoded.rstrip("=")) == key
    assert parse_secret(f"  whsec_{encoded}\n") == key


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "must start with 'whsec_'"),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_", "nothing after"),
        ("whsec_not base64!", "standard base64"),
        ("whsec_" + base64.urlsafe_b64encode(b"\xfb" * 30).decode(), "standard base64"),
        ("whsec_a", "standard base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "24 to 64 bytes, not 16"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes, not 65"),
    ],
)
def test_malformed_secrets_raise_a_clear_value_error(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_secret(secret)
    assert type(info.value) is ValueError
    if len(secret) > 10:
        assert secret[6:] not in str(info.value)  # never echo the secret


def test_message_ids_are_unique_and_dot_free() -> None:
    ids = {new_message_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(i.startswith("msg_") and "." not in i for i in ids)


def test_sign_refuses_ids_that_would_make_the_signed_content_ambiguous(secret: str) -> None:
    with pytest.raises(ValueError, match=r"without '\.'"):
        sign(secret, "msg.1", NOW, BODY)
    with pytest.raises(ValueError, match="printable ASCII"):
        sign(secret, "", NOW, BODY)


def test_sign_refuses_negative_timestamps(secret: str) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        sign(secret, "msg_1", -1, BODY)


def test_signed_headers_shape(secret: str) -> None:
    headers = signed_headers(secret, "msg_abc", BODY, now=NOW)
    assert headers == {
        "webhook-id": "msg_abc",
        "webhook-timestamp": str(NOW),
        "webhook-signature": sign(secret, "msg_abc", NOW, BODY),
    }


def test_signed_headers_uses_the_clock_by_default(secret: str) -> None:
    before = int(time.time())
    stamp = int(signed_headers(secret, "msg_abc", BODY)["webhook-timestamp"])
    assert before <= stamp <= int(time.time())


def test_a_string_secret_is_not_split_into_characters(secret: str) -> None:
    assert len(headers_for(secret)["webhook-signature"].split(" ")) == 1


def test_no_secrets_at_all_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        signed_headers([], "msg_1", BODY, now=NOW)
    with pytest.raises(ValueError, match="at least one"):
        verify([], headers_for(generate_secret()), BODY, now=NOW)


# --- Verification ---------------------------------------------------------------------


def test_round_trip(secret: str) -> None:
    verify(secret, headers_for(secret), BODY, now=NOW)


def test_empty_body_round_trips(secret: str) -> None:
    verify(secret, headers_for(secret, body=b""), b"", now=NOW)


def test_non_utf8_body_round_trips(secret: str) -> None:
    body = b"\xff\xfe\x00binary"
    verify(secret, headers_for(secret, body=body), body, now=NOW)


def test_header_names_are_case_insensitive(secret: str) -> None:
    headers = {k.title(): v for k, v in headers_for(secret).items()}
    assert "Webhook-Signature" in headers
    verify(secret, headers, BODY, now=NOW)


def test_unrelated_headers_are_ignored(secret: str) -> None:
    headers = {**headers_for(secret), "Content-Type": "application/json", "X-Other": "ü"}
    verify(secret, headers, BODY, now=NOW)


Tamper = Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, b: (h, b + b" "), id="body-appended"),
        pytest.param(lambda h, b: (h, b.replace(b"out_1", b"out_2")), id="body-changed"),
        pytest.param(lambda h, b: ({**h, "webhook-id": "msg_test2"}, b), id="id"),
        pytest.param(lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b), id="timestamp"),
    ],
)
def test_tampering_is_detected(secret: str, tamper: Tamper) -> None:
    headers, body = tamper(headers_for(secret), BODY)
    with pytest.raises(SignatureInvalid, match="no signature matches"):
        verify(secret, headers, body, now=NOW)


def test_the_wrong_secret_fails(secret: str) -> None:
    with pytest.raises(SignatureInvalid, match="no signature matches"):
        verify(generate_secret(), headers_for(secret), BODY, now=NOW)


def test_rotation_sender_signs_with_both_keys() -> None:
    old, new = generate_secret(), generate_secret()
    headers = headers_for([new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(old, headers, BODY, now=NOW)  # a receiver not yet updated
    verify(new, headers, BODY, now=NOW)  # a receiver already updated


def test_rotation_receiver_accepts_either_key() -> None:
    old, new = generate_secret(), generate_secret()
    verify([new, old], headers_for(old), BODY, now=NOW)
    verify([new, old], headers_for(new), BODY, now=NOW)
    with pytest.raises(SignatureInvalid):
        verify([new, old], headers_for(generate_secret()), BODY, now=NOW)


def test_signatures_of_other_schemes_are_skipped(secret: str) -> None:
    headers = headers_for(secret)
    v1a = "v1a," + base64.b64encode(b"\x01" * 64).decode()
    v2 = "v2," + base64.b64encode(b"\x02" * 32).decode()
    headers["webhook-signature"] = f"{v1a} {v2}  {headers['webhook-signature']}"
    verify(secret, headers, BODY, now=NOW)


def test_a_v1_signature_of_the_wrong_length_does_not_match(secret: str) -> None:
    headers = headers_for(secret)
    headers["webhook-signature"] = "v1," + base64.b64encode(b"\x00" * 16).decode()
    with pytest.raises(SignatureInvalid, match="no signature matches"):
        verify(secret, headers, BODY, now=NOW)


@pytest.mark.parametrize(
    ("offset", "message"),
    [(-301, "301s old"), (301, "301s in the future"), (-10_000_000, "old")],
)
def test_timestamps_outside_the_tolerance_fail(secret: str, offset: int, message: str) -> None:
    headers = headers_for(secret, now=NOW + offset)
    with pytest.raises(SignatureInvalid, match=message):
        verify(secret, headers, BODY, now=NOW)


@pytest.mark.parametrize("offset", [-300, 300, 0])
def test_timestamps_at_the_tolerance_edge_pass(secret: str, offset: int) -> None:
    verify(secret, headers_for(secret, now=NOW + offset), BODY, now=NOW)


def test_tolerance_is_configurable(secret: str) -> None:
    headers = headers_for(secret, now=NOW - 60)
    verify(secret, headers, BODY, now=NOW, tolerance=60)
    with pytest.raises(SignatureInvalid, match="more than the 59s allowed"):
        verify(secret, headers, BODY, now=NOW, tolerance=59)


def test_verify_defaults_to_the_clock(secret: str) -> None:
    verify(secret, signed_headers(secret, "msg_1", BODY), BODY)
    with pytest.raises(SignatureInvalid, match="old"):
        verify(secret, signed_headers(secret, "msg_1", BODY, now=NOW), BODY)


# --- Hostile headers: SignatureInvalid, never anything else ---------------------------


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers(secret: str, missing: str) -> None:
    headers = headers_for(secret)
    del headers[missing]
    with pytest.raises(SignatureInvalid, match=f"{missing} header is missing"):
        verify(secret, headers, BODY, now=NOW)


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_headers_count_as_missing(secret: str, blank: str) -> None:
    headers = {**headers_for(secret), "webhook-signature": blank}
    with pytest.raises(SignatureInvalid, match="missing"):
        verify(secret, headers, BODY, now=NOW)


HOSTILE_TIMESTAMPS = [
    "abc",
    "1.5e9",
    str(NOW) + ".0",
    "-1",
    "+" + str(NOW),
    "0x6553f100",
    "1_700_000_000",
    "\u0661\u0667" + "\u0660" * 8,  # Arabic-Indic digits: int() accepts them
    "\u00b9\u2077" + "\u2070" * 8,  # superscripts: str.isdigit() accepts them
    "9" * 5000,  # beyond int()'s digit limit: a ValueError if it ever reached int()
    "9" * 13,
    "NaN",
    "inf",
    f"{NOW} {NOW}",
]


@pytest.mark.parametrize("timestamp", HOSTILE_TIMESTAMPS)
def test_hostile_timestamps(secret: str, timestamp: str) -> None:
    headers = {**headers_for(secret), "webhook-timestamp": timestamp}
    with pytest.raises(SignatureInvalid, match="whole seconds"):
        verify(secret, headers, BODY, now=NOW)


HOSTILE_SIGNATURES = [
    "garbage",
    "v1",
    "v1,",
    ",abc=",
    "v1,not base64!",
    "v1,abc",  # bad padding
    "v1,abc===",
    "v1,YWJj,YWJj",
    "v1:YWJj",
    "V1,YWJj",
    "v1,g0hM9SsE-OTPJTGt_tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # URL-safe alphabet
    "v1,ÿÿÿÿ",
    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=\u00a0",  # non-breaking space
    "v1,\u0660\u0661\u0662\u0663",
    "v1," + "A" * 5000,
    "\x00",
    "v1a,YWJj",  # well formed but no v1 among them
]


@pytest.mark.parametrize("signature", HOSTILE_SIGNATURES)
def test_hostile_signature_headers(secret: str, signature: str) -> None:
    headers = {**headers_for(secret), "webhook-signature": signature}
    with pytest.raises(SignatureInvalid, match="webhook-signature header"):
        verify(secret, headers, BODY, now=NOW)


def test_one_malformed_entry_poisons_the_header(secret: str) -> None:
    # Lenient parsing is where verifiers and proxies start to disagree; refuse outright.
    headers = headers_for(secret)
    headers["webhook-signature"] += " garbage"
    with pytest.raises(SignatureInvalid, match="malformed"):
        verify(secret, headers, BODY, now=NOW)


HOSTILE_IDS = ["msg.1", "msg 1", "msg_ü", "msg_\x00", "m" * 257, "msg_1\u2028"]


@pytest.mark.parametrize("msg_id", HOSTILE_IDS)
def test_hostile_ids(secret: str, msg_id: str) -> None:
    headers = {**headers_for(secret), "webhook-id": msg_id}
    with pytest.raises(SignatureInvalid, match="webhook-id"):
        verify(secret, headers, BODY, now=NOW)


def test_duplicate_spellings_of_a_header_are_refused(secret: str) -> None:
    headers = {**headers_for(secret), "Webhook-Id": "msg_other"}
    with pytest.raises(SignatureInvalid, match="more than once"):
        verify(secret, headers, BODY, now=NOW)


def test_non_text_header_values_are_refused(secret: str) -> None:
    headers: dict[str, object] = {**headers_for(secret), "webhook-signature": b"v1,YWJj"}
    with pytest.raises(SignatureInvalid, match="must be text"):
        verify(secret, headers, BODY, now=NOW)  # type: ignore[arg-type]  # the wrong type is the test


def test_signature_invalid_is_a_cosmo_error_with_a_title() -> None:
    assert issubclass(SignatureInvalid, CosmoError)
    assert SignatureInvalid("x").title == "Invalid webhook signature"
    assert SignatureInvalid("x").detail == "x"


def test_a_broken_secret_is_reported_as_config_not_as_a_bad_sender() -> None:
    with pytest.raises(ValueError, match="whsec_") as info:
        verify("not-a-secret", headers_for(generate_secret()), BODY, now=NOW)
    assert not isinstance(info.value, SignatureInvalid)


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verify(secret, headers_for(secret), BODY, now=NOW)
    assert calls
