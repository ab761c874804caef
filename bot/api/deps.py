"""FastAPI dependencies: the container, the caller, the tenant."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.wiring import Container

TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# Parses `Authorization` and declares the scheme in the OpenAPI document
# (`components.securitySchemes.HTTPBearer`). `auto_error=False`: a missing or malformed
# header gets the same problem+json 401 as a wrong token, from `require_caller`.
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <COSMO_API_TOKEN>`.")


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
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    x_cosmo_tenant: Annotated[
        str | None, Header(description="Tenant (Slack workspace id); default tenant if absent.")
    ] = None,
) -> Caller:
    check_token(request, credentials)
    tenant = x_cosmo_tenant or container.settings.default_tenant
    if not TENANT.match(tenant):
        raise HTTPException(400, "X-Cosmo-Tenant must be 1-64 letters, digits, '-' or '_'")
    return Caller(actor="api", tenant_id=tenant)


def check_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    token: str = request.app.state.api_token
    given = credentials.credentials if credentials is not None else ""
    if credentials is None or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), token.encode()
    ):
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )


class BearerRoute(APIRoute):
    """A route that checks the bearer token before anything reads the request body.

    FastAPI parses a JSON body before it runs dependencies, so without this a caller with
    no token would learn whether its JSON parses (422) instead of getting 401.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            check_token(request, await bearer(request))
            return await handler(request)

        return authenticated


CallerDep = Annotated[Caller, Depends(require_caller)]
ContainerDep = Annotated[Container, Depends(get_container)]
