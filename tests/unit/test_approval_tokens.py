from datetime import UTC, datetime, timedelta

import pytest

from core.approvals.tokens import InvalidToken, TokenSigner

OUT = "out_01m866d9prcxxrm91y4q97jd5k"


def test_a_token_round_trips_with_its_tenant_and_output():
    signer = TokenSigner("secret", timedelta(hours=1))
    claims = signer.verify(signer.issue("approve", "T123", OUT), "approve")
    assert (claims.tenant_id, claims.output_id) == ("T123", OUT)


def test_a_content_link_is_not_an_approval_token():
    signer = TokenSigner("secret", timedelta(hours=1))
    with pytest.raises(InvalidToken, match="content token"):
        signer.verify(signer.issue("content", "T1", OUT), "approve")


def test_another_key_or_an_edited_claim_is_refused():
    token = TokenSigner("secret", timedelta(hours=1)).issue("approve", "T1", OUT)
    with pytest.raises(InvalidToken, match="signature"):
        TokenSigner("other", timedelta(hours=1)).verify(token, "approve")
    with pytest.raises(InvalidToken, match="signature"):
        TokenSigner("secret", timedelta(hours=1)).verify(token.replace(".T1.", ".T2."), "approve")


def test_expiry_is_enforced():
    signer = TokenSigner("secret", timedelta(minutes=5))
    now = datetime(2026, 11, 24, tzinfo=UTC)
    token = signer.issue("approve", "T1", OUT, now=now)
    signer.verify(token, "approve", now=now + timedelta(minutes=4))
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify(token, "approve", now=now + timedelta(minutes=5))
