"""Who is calling, for which tenant, with which role; and the role each route requires.

Every authenticated route declares its role in its signature, `caller: ReaderDep`,
`ReviewerDep` or `AdminDep`. `BearerRoute` finds that declaration when the route is built,
publishes it in the OpenAPI document (`x-cosmo-role` and a line in the description), checks it
before the request body is read, and refuses to build a route that declares none.

Two kinds of bearer token are accepted:
- `COSMO_API_TOKEN`, the operator's root key: every tenant (chosen with `X-Cosmo-Tenant`),
  every role. Root-equivalent; it is never stored in the database.
- tenant keys (`cosmo keys create`, `POST /api/v1/keys`): one tenant, one role. Without
  `X-Cosmo-Tenant` they act on their own tenant; naming another tenant is 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, Response, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bot.api.deps import get_container
from bot.api.problems import problem_responses
from core.approvals.policy import Actor
from core.concurrency import run_sync
from core.errors import FieldError, Forbidden, ValidationFailed
from core.keys.roles import Role
from core.keys.service import TENANT_ID, ApiKeyView, looks_like_key
from core.log_context import bind

ROLE_EXTENSION = "x-cosmo-role"
ROOT_KEY_ID = "root"
ROOT_KEY_NAME = "COSMO_API_TOKEN"

# Parses `Authorization` and declares the scheme in the OpenAPI document
# (`components.securitySchemes.HTTPBearer`). `auto_error=False`: a missing or malformed
# header gets the same problem+json 401 as a wrong token.
bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <key>`: a tenant key (`cosmo keys create`; one tenant, "
    "one role) or `COSMO_API_TOKEN`, the operator's root key (every tenant, every role: "
    "root-equivalent).",
)


@dataclass(frozen=True)
class Caller:
    """The key behind a request and the tenant it acts on.

    `user_id` is the Slack user a bound key decides as; `key_id`/`key_name` name the key
    (never the key itself) wherever the request leaves a trace.
    """

    tenant_id: str
    role: Role
    key_id: str
    key_name: str
    user_id: str | None = None
    root: bool = False

    @property
    def actor(self) -> str:
        """How configuration changes name who made them."""
        return "api" if self.root else self.key_id

    def decider(self, user_id: str | None) -> Actor:
        """Who decides an output through this request.

        A bound key decides as its Slack user, verified; naming anyone else is 403. Other
        keys may name a user, whose identity is then only asserted (approver rules apply).
        Without a user, an admin key (or root) decides as itself, trusted, named by the key;
        a reviewer key must name the user, since nobody vouches for it as an approver.
        """
        key_id, key_name = self.key_id, self.key_name
        if self.user_id is not None:
            self._same_user(user_id)
            return Actor(self.user_id, "api", verified=True, key_id=key_id, key_name=key_name)
        if user_id:
            return Actor(user_id, "api", key_id=key_id, key_name=key_name)
        if self.role is Role.ADMIN:
            # The key itself is who decides, and presenting it proves that: verified.
            return Actor(
                self.actor, "api", trusted=True, verified=True, key_id=key_id, key_name=key_name
            )
        raise ValidationFailed(
            [
                FieldError(
                    ("body", "user_id"),
                    f"required: key {self.key_name!r} ({self.key_id}) is not bound to a Slack "
                    "user, so the decision must name who decides",
                )
            ]
        )

    def speaker(self, user_id: str | None) -> str:
        """The user a new REST session speaks for: a bound key's own user, always."""
        if self.user_id is not None:
            self._same_user(user_id)
            return self.user_id
        return user_id or "api"

    def _same_user(self, user_id: str | None) -> None:
        if user_id and user_id != self.user_id:
            raise Forbidden(
                f"key {self.key_name!r} ({self.key_id}) is bound to Slack user {self.user_id} "
                f"and cannot act as {user_id}"
            )


def _unauthorized() -> HTTPException:
    return HTTPException(
        401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
    )


async def _identify(request: Request, token: str) -> ApiKeyView | None:
    """The tenant key presented, or None for the root key; 401 for anything else."""
    root: str = request.app.state.api_token
    given = token.encode("utf-8", "surrogateescape")
    if hmac.compare_digest(given, root.encode()):
        return None
    if looks_like_key(token):
        container = get_container(request)
        key = await run_sync(container.keys.authenticate, token)
        if key is not None:
            return key
    raise _unauthorized()


async def authorize(request: Request, required: Role) -> Caller:
    """Authenticate the request, settle its tenant and check the role (once per request)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:
        credentials = await bearer(request)
        if credentials is None:
            raise _unauthorized()
        key = await _identify(request, credentials.credentials)
        caller = _caller(request, key)
        request.state.caller = caller
        bind(tenant=caller.tenant_id)
    if not caller.role.includes(required):
        raise Forbidden(
            f"this route needs the {required.value} role; key {caller.key_name!r} "
            f"({caller.key_id}) is a {caller.role.value} key"
        )
    return caller


def _caller(request: Request, key: ApiKeyView | None) -> Caller:
    header = request.headers.get("x-cosmo-tenant")
    if header is not None and not TENANT_ID.match(header):
        raise HTTPException(400, "X-Cosmo-Tenant must be 1-64 letters, digits, '-' or '_'")
    if key is None:
        tenant = header or get_container(request).settings.default_tenant
        return Caller(tenant, Role.ADMIN, ROOT_KEY_ID, ROOT_KEY_NAME, root=True)
    if header is not None and header != key.tenant_id:
        raise Forbidden(
            f"key {key.name!r} ({key.id}) belongs to tenant {key.tenant_id} and cannot act on "
            f"tenant {header} named by X-Cosmo-Tenant; only the operator's root key "
            "(COSMO_API_TOKEN) reaches every tenant"
        )
    return Caller(key.tenant_id, key.role, key.id, key.name, user_id=key.user_id)


class RequireRole:
    """The dependency a route takes to declare (and get checked for) its role."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(
        self,
        request: Request,
        # Declared for the OpenAPI document; `authorize` reads the request itself.
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        x_cosmo_tenant: Annotated[
            str | None,
            Header(
                description="Tenant (Slack workspace id); if absent, a tenant key's own "
                "(any other is 403) or the root key's default."
            ),
        ] = None,
    ) -> Caller:
        return await authorize(request, self.role)


ReaderDep = Annotated[Caller, Depends(RequireRole(Role.READER))]
ReviewerDep = Annotated[Caller, Depends(RequireRole(Role.REVIEWER))]
AdminDep = Annotated[Caller, Depends(RequireRole(Role.ADMIN))]


def _declared_roles(dependant: Dependant) -> Iterator[Role]:
    for dep in dependant.dependencies:
        if isinstance(dep.call, RequireRole):
            yield dep.call.role
        yield from _declared_roles(dep)


class BearerRoute(APIRoute):
    """A route that needs a key: its declared role is published and checked before anything
    reads the request body.

    FastAPI parses a JSON body before it runs dependencies, so without the early check a
    caller with no token (or too low a role) would learn whether its JSON parses (422)
    instead of getting 401 (or 403).
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        roles = list(_declared_roles(self.dependant))
        if not roles:
            raise TypeError(
                f"{path} ({endpoint.__name__}) declares no role: take `caller: ReaderDep`, "
                "`ReviewerDep` or `AdminDep` from bot.api.auth"
            )
        self.required_role = max(roles, key=lambda r: r.rank)
        # Any keyed route answers 403 to a key of another tenant or too low a role.
        for status, response in problem_responses(403).items():
            self.responses.setdefault(status, response)
        self.openapi_extra = {
            **(self.openapi_extra or {}),
            ROLE_EXTENSION: self.required_role.value,
        }
        line = f"Role: `{self.required_role.value}` or higher (or the root key)."
        if line not in (self.description or ""):
            self.description = f"{self.description}\n\n{line}".lstrip()

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authorized(request: Request) -> Response:
            # Read at request time: FastAPI builds the handler before `__init__` settles it.
            await authorize(request, self.required_role)
            return await handler(request)

        return authorized
