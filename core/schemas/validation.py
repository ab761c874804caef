"""Turn pydantic errors into `ValidationFailed` with field paths, at one place."""

from __future__ import annotations

from typing import NoReturn

from pydantic import ValidationError

from core.errors import FieldError, ValidationFailed


def field_errors(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        out.append(FieldError(prefix + tuple(err["loc"]), msg))
    return out


def raise_validation_failed(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> NoReturn:
    raise ValidationFailed(field_errors(exc, prefix)) from None
