"""Signed receipts of an output's decisions and executions, and the public key anyone can
check them with (served without authentication, on purpose)."""

from __future__ import annotations

import base64
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from bot.api.auth import BearerRoute, ReaderDep
from bot.api.deps import ContainerDep
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from core.approvals.receipts import SignedReceipt
from core.errors import NotFound

router = APIRouter(prefix=API_PREFIX, tags=["receipts"])
authenticated = APIRouter(
    prefix=API_PREFIX,
    tags=["receipts"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


class OutputReceipts(BaseModel):
    output_id: str
    latest: SignedReceipt = Field(description="The most recent receipt (the current state).")
    history: list[SignedReceipt] = Field(
        description="Every receipt of the output, oldest first (a decision, then its "
        "execution; a retried execution adds one)."
    )
    public_key_id: str = Field(description="Id of the key that signs receipts now.")


class PublicKey(BaseModel):
    alg: Literal["Ed25519"] = "Ed25519"
    key_id: str = Field(description="First 16 hex digits of sha256 of the raw public key.")
    public_key: str = Field(description="The 32 raw bytes of the public key, base64.")
    pem: str = Field(description="The public key as PEM (SubjectPublicKeyInfo).")


@authenticated.get("/outputs/{output_id}/receipt", responses=problem_responses(404))
def output_receipt(output_id: str, caller: ReaderDep, c: ContainerDep) -> OutputReceipts:
    """The signed receipts of an output. 404 while nothing has been decided yet.

    To check one: take `canonical` (UTF-8 bytes), verify `signature` (base64 Ed25519)
    with the public key whose id is `key_id` (`GET /api/v1/receipts/public-key`)."""
    c.outputs.get(caller.tenant_id, output_id)
    receipts = c.receipts.for_output(caller.tenant_id, output_id)
    if not receipts:
        raise NotFound("receipt for output", output_id)
    return OutputReceipts(
        output_id=output_id,
        latest=receipts[-1],
        history=receipts,
        public_key_id=c.receipts.signer.key_id,
    )


@router.get("/receipts/public-key")
def receipts_public_key(c: ContainerDep) -> PublicKey:
    """The Ed25519 public key receipts are signed with. No authentication: anyone holding a
    receipt may verify it."""
    signer = c.receipts.signer
    return PublicKey(
        key_id=signer.key_id,
        public_key=base64.b64encode(signer.public_raw).decode("ascii"),
        pem=signer.public_pem,
    )
