"""Every error the REST API returns is `application/problem+json` (RFC 9457), mapped here."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.approvals.tokens import InvalidToken
from core.db import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS
from core.errors import (
    Conflict,
    CosmoError,
    Forbidden,
    NotAllowedToDecide,
    NotFound,
    OutputAlreadyDecided,
    PreconditionFailed,
    RateLimitExceeded,
    SchemaOutOfDate,
    ServiceUnavailable,
    ValidationFailed,
)
from core.knowledge.schemas import KnowledgeBaseInUse

log = logging.getLogger("cosmo.api")
PROBLEM = "application/problem+json"

_STATUS: list[tuple[type[CosmoError], int]] = [
    (NotFound, 404),
    (InvalidToken, 401),
    (NotAllowedToDecide, 403),
    (Forbidden, 403),
    (OutputAlreadyDecided, 409),
    (Conflict, 409),
    (PreconditionFailed, 412),
    (ValidationFailed, 422),
    (RateLimitExceeded, 429),
    (SchemaOutOfDate, 503),
    (ServiceUnavailable, 503),
]


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _status_for(exc: CosmoError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def _errors(errors: list[tuple[tuple[str | int, ...], str]]) -> list[dict[str, Any]]:
    return [
        {"loc": list(loc), "field": ".".join(str(p) for p in loc), "msg": msg}
        for loc, msg in errors
    ]


def problem_of(exc: CosmoError) -> dict[str, Any]:
    """The problem+json body for a typed error (also one item's answer in a bulk call)."""
    status = _status_for(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationFailed):
        extra["errors"] = _errors([(e.loc, e.msg) for e in exc.errors])
    if isinstance(exc, OutputAlreadyDecided):
        extra.update(
            status_now=exc.status,
            decided_by=exc.decided_by,
            decided_at=exc.decided_at.isoformat() if exc.decided_at else None,
        )
    if isinstance(exc, KnowledgeBaseInUse):
        extra["agents"] = exc.agents
    return {
        "type": "about:blank",
        "title": exc.title,
        "status": status,
        "detail": exc.detail,
        **extra,
    }


async def _cosmo_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CosmoError)
    body = problem_of(exc)
    response = JSONResponse(body, status_code=body["status"], media_type=PROBLEM)
    if isinstance(exc, RateLimitExceeded):
        response.headers["Retry-After"] = "3600"
    return response


def _json_position(doc: object, pos: object) -> str:
    """`line L, column C` (1-based) of a character offset, as editors count them."""
    if not isinstance(doc, str) or not isinstance(pos, int):
        return "position unknown"
    line = doc.count("\n", 0, pos) + 1
    column = pos - (doc.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {column}"


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            # FastAPI reports the offset as a location (`body.13`): say what and where instead.
            loc = tuple(err.get("loc", ()))
            where = _json_position(exc.body, loc[1] if len(loc) > 1 else None)
            reason = str((err.get("ctx") or {}).get("error", "")).lower()
            msg = f"the body is not valid JSON ({where}{': ' + reason if reason else ''})"
            return problem(422, "Invalid JSON", msg, errors=_errors([(("body",), msg)]))
    errs = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        errs.append((tuple(err.get("loc", ())), msg))
    detail = "; ".join(f"{'.'.join(str(p) for p in loc)}: {msg}" for loc, msg in errs)
    return problem(422, "Validation failed", detail, errors=_errors(errs))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = problem(exc.status_code, _title(exc.status_code), str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def database_unavailable() -> JSONResponse:
    response = problem(
        503,
        "Service unavailable",
        "the database cannot be reached right now; nothing was changed, try again shortly",
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The driver's message can name hosts and users: the log gets the class only.
    log.warning(
        "database unavailable on %s %s (%s)",
        request.method,
        request.url.path,
        type(exc).__name__,
    )
    return database_unavailable()


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Logged with the route only: bodies may hold secrets.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "Internal error", "an unexpected error occurred; it has been logged")


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def install(app: FastAPI) -> None:
    app.add_exception_handler(CosmoError, _cosmo_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem statuses a route can return."""
    return {
        s: {
            "description": _title(s),
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }
