"""FastAPI dependencies: the container, the caller, the tenant."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from core.wiring import Container

TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


@dataclass(frozen=True)
class Caller:
    """Who is calling and for which tenant (a Slack workspace, or the default one)."""

    actor: str
    tenant_id: str


def require_caller(
    request: Request,
    container: Annotated[Container, Depends(get_container)],
    authorization: Annotated[str | None, Header()] = None,
    x_cosmo_tenant: Annotated[
        str | None, Header(description="Tenant (Slack workspace id); default tenant if absent.")
    ] = None,
) -> Caller:
    token: str = request.app.state.api_token
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode()
    ):
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    tenant = x_cosmo_tenant or container.settings.default_tenant
    if not TENANT.match(tenant):
        raise HTTPException(400, "X-Cosmo-Tenant must be 1-64 letters, digits, '-' or '_'")
    return Caller(actor="api", tenant_id=tenant)


CallerDep = Annotated[Caller, Depends(require_caller)]
ContainerDep = Annotated[Container, Depends(get_container)]
