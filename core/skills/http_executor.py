"""HTTP skills: a request declared in config, filled from the validated arguments.

This is how an agent reaches a CRM or a ticketing system. The admin fixes the method,
the URL template, headers and a JSON body template; the model only supplies values.

Templating rules (`{{name}}` names a top-level argument):

* **URL.** Values are percent-encoded with nothing left safe (`quote(v, safe="")`), so a
  value can never add a path segment, a query parameter or a fragment: `../admin?x=1#`
  arrives as `..%2Fadmin%3Fx%3D1%23`. Placeholders are refused in the scheme and host
  (when the skill is built). A path placeholder must have a value, and a path segment it
  fills must not come out empty, `.` or `..`; otherwise the model is told to fix its
  call. A query parameter whose placeholder has no value (argument absent or null) is left
  out entirely: `?q={{query}}&limit={{limit}}` without `limit` becomes `?q=...`.
* **Body.** A string leaf that is exactly `"{{x}}"` becomes the argument's JSON value, type
  kept (numbers stay numbers, lists stay lists); when `x` is absent the key (or list
  item) is left out. Placeholders inside longer strings become text, absent ones empty.
  Without a `body_template`, POST/PUT/PATCH send all arguments as the JSON body and
  GET/DELETE send no body.
* **Text of a value** (URL and embedded placeholders): strings as they are, `true`/`false`,
  numbers as JSON, lists of scalars comma-joined, anything else compact JSON.

Secret headers are read through `secrets(ENV_NAME)` at call time and never written into a
result or an error; a response that echoes one back has it replaced by `[redacted]`.
Where a request may go is `core.skills.egress`'s call: the client the wiring passes
refuses internal addresses, this server and the database. Redirects are not followed.
The whole exchange is bounded by `timeout_seconds`, and the body is read as a stream and
cut at `max_response_bytes`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from core.schemas.skill import HttpExecutor
from core.skills.egress import SkillDestinationRefused
from core.skills.runtime import (
    SkillArgumentsInvalid,
    SkillConfigInvalid,
    SkillContext,
    SkillFailed,
    SkillResult,
)

log = logging.getLogger("cosmo.skills.http")

SecretLookup = Callable[[str], str | None]

USER_AGENT = "cosmo-agents"
REDACTED = "[redacted]"
#: How much of an error response the model sees.
MAX_ERROR_BODY_CHARS = 1_000

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")
_URL = re.compile(
    r"^(?P<origin>https?://[^/?#]*)(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?(?:#.*)?$", re.S
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_MISSING: Any = object()
#: What `render_json_body` returns when the request has no body.
MISSING_BODY: Any = _MISSING


def value_text(value: Any) -> str:
    """How an argument reads when it is spliced into text (see the module docstring)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(
        isinstance(v, str | int | float | bool) or v is None for v in value
    ):
        return ",".join(value_text(v) for v in value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _present(arguments: dict[str, Any], name: str) -> bool:
    return arguments.get(name) is not None


def render_body(template: Any, arguments: dict[str, Any]) -> Any:
    """Fill a body template; returns `_MISSING` for a whole-value placeholder without value."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole:
            return arguments.get(whole.group(1), _MISSING)
        return PLACEHOLDER.sub(lambda m: value_text(arguments.get(m.group(1))), template)
    if isinstance(template, dict):
        filled = {k: render_body(v, arguments) for k, v in template.items()}
        return {k: v for k, v in filled.items() if v is not _MISSING}
    if isinstance(template, list):
        items = [render_body(v, arguments) for v in template]
        return [v for v in items if v is not _MISSING]
    return template


class HttpSkillExecutor:
    """Calls one configured endpoint with the shared `httpx.AsyncClient`."""

    def __init__(
        self,
        skill: str,
        config: HttpExecutor,
        client: httpx.AsyncClient,
        secrets: SecretLookup,
    ) -> None:
        match = _URL.match(config.url)
        if match is None:
            raise SkillConfigInvalid(f"skill {skill!r}: {config.url!r} is not an http(s) URL")
        if PLACEHOLDER.search(match["origin"]):
            raise SkillConfigInvalid(
                f"skill {skill!r}: the URL's scheme and host must be fixed; "
                "placeholders may only fill the path and the query"
            )
        self.skill = skill
        self.config = config
        self.client = client
        self.secrets = secrets
        self._origin: str = match["origin"]
        self._path: str = match["path"]
        self._query: str | None = match["query"]
        try:
            self.host = httpx.URL(self._origin).host
        except httpx.InvalidURL as exc:  # e.g. an IPv4 address with a leading zero
            raise SkillConfigInvalid(f"skill {skill!r}: the URL's host is invalid: {exc}") from None

    # --- request -------------------------------------------------------------------------

    def render_url(self, arguments: dict[str, Any]) -> str:
        return self._origin + self._render_path(arguments) + self._render_query(arguments)

    def _render_path(self, arguments: dict[str, Any]) -> str:
        problems: list[str] = []
        segments: list[str] = []
        for segment in self._path.split("/"):
            names = PLACEHOLDER.findall(segment)
            missing = [n for n in names if not _present(arguments, n)]
            for name in missing:
                problems.append(f"$.{name}: required, because it is part of the request URL")
            if missing:
                continue
            filled = PLACEHOLDER.sub(
                lambda m: quote(value_text(arguments[m.group(1)]), safe=""), segment
            )
            if names and filled in ("", ".", ".."):
                shown = ", ".join(f"$.{n}" for n in names)
                problems.append(f"{shown}: must not be empty, '.' or '..' in the request URL")
            segments.append(filled)
        if problems:
            raise SkillArgumentsInvalid(self.skill, problems)
        return "/".join(segments)

    def _render_query(self, arguments: dict[str, Any]) -> str:
        if self._query is None:
            return ""
        kept: list[str] = []
        for pair in self._query.split("&"):
            names = PLACEHOLDER.findall(pair)
            if any(not _present(arguments, n) for n in names):
                continue  # an optional argument the model left out: drop the parameter
            kept.append(
                PLACEHOLDER.sub(lambda m: quote(value_text(arguments[m.group(1)]), safe=""), pair)
            )
        kept = [p for p in kept if p]
        return "?" + "&".join(kept) if kept else ""

    def render_json_body(self, arguments: dict[str, Any]) -> Any:
        """The JSON body, or `_MISSING` for none."""
        if self.config.body_template is None:
            return dict(arguments) if self.config.method in _BODY_METHODS else _MISSING
        return render_body(self.config.body_template, arguments)

    def _headers(self) -> tuple[dict[str, str], list[str]]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        headers.update(self.config.headers)
        secrets: list[str] = []
        for header, env_name in self.config.secret_headers.items():
            value = self.secrets(env_name)
            if not value:
                raise SkillFailed(
                    f"{self.skill} is not configured: the environment variable {env_name} "
                    f"(for the {header} header) is not set. Tell an administrator."
                )
            headers[header] = value
            secrets.append(value)
        return headers, secrets

    # --- call ------------------------------------------------------------------------------

    async def execute(self, arguments: dict[str, Any], ctx: SkillContext) -> SkillResult:
        url = self.render_url(arguments)
        body = self.render_json_body(arguments)
        headers, secrets = self._headers()
        if ctx.idempotency_key is not None:
            headers["Idempotency-Key"] = ctx.idempotency_key
        timeout = self.config.timeout_seconds
        request = self.client.build_request(
            self.config.method,
            url,
            headers=headers,
            json=None if body is _MISSING else body,
            timeout=httpx.Timeout(timeout),
        )
        try:
            async with asyncio.timeout(timeout):
                response = await self.client.send(request, stream=True, follow_redirects=False)
                try:
                    raw, truncated = await self._read_capped(response)
                finally:
                    await response.aclose()
        except SkillDestinationRefused as exc:
            # Refused before connecting (core.skills.egress): nothing of the target is read.
            raise SkillDestinationRefused(f"{self.skill}: {exc.detail}") from None
        except (TimeoutError, httpx.TimeoutException):
            raise SkillFailed(
                f"{self.skill}: {self.host} did not answer within {timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            # The exception text can quote the request; name only its kind.
            log.warning("skill %s: %s calling %s", self.skill, type(exc).__name__, self.host)
            raise SkillFailed(
                f"{self.skill}: could not reach {self.host} ({type(exc).__name__})"
            ) from None
        return self._result(response, raw, truncated, secrets)

    async def _read_capped(self, response: httpx.Response) -> tuple[bytes, bool]:
        cap = self.config.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return b"".join(chunks)[:cap], True
        return b"".join(chunks), False

    def _result(
        self, response: httpx.Response, raw: bytes, truncated: bool, secrets: list[str]
    ) -> SkillResult:
        status = response.status_code
        try:
            text = raw.decode(response.charset_encoding or "utf-8", errors="replace")
        except LookupError:
            text = raw.decode("utf-8", errors="replace")
        body: Any = text
        is_json = "json" in response.headers.get("content-type", "").lower()
        if is_json and not truncated and text.strip():
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        body = _redact(body, secrets)
        shown = (
            json.dumps(body, ensure_ascii=False, separators=(",", ":"))
            if not isinstance(body, str)
            else body
        )
        data: dict[str, Any] = {"status": status, "body": body}
        if truncated:
            data["truncated"] = True
            shown += f"\n[response truncated at {self.config.max_response_bytes} bytes]"
        if 200 <= status < 300:
            empty = f"HTTP {status}: done (no content)."
            return SkillResult(shown if text.strip() else empty, data)
        if len(shown) > MAX_ERROR_BODY_CHARS:
            shown = shown[:MAX_ERROR_BODY_CHARS] + "…"
        note = " (redirects are not followed)" if 300 <= status < 400 else ""
        reason = f" {response.reason_phrase}" if response.reason_phrase else ""
        content = f"HTTP {status}{reason} from {self.host}{note}"
        return SkillResult(content + (f": {shown}" if shown.strip() else ""), data, is_error=True)


def _secret_forms(secrets: list[str]) -> list[str]:
    """Each secret, and its last word (`Bearer abc...` is often echoed as `abc...`)."""
    forms: set[str] = set()
    for secret in secrets:
        forms.add(secret)
        last = secret.split()[-1] if secret.split() else ""
        if len(last) >= 8:
            forms.add(last)
    return sorted(forms, key=len, reverse=True)


def _redact(value: Any, secrets: list[str]) -> Any:
    if not secrets:
        return value
    forms = _secret_forms(secrets)

    def scrub(v: Any) -> Any:
        if isinstance(v, str):
            for form in forms:
                v = v.replace(form, REDACTED)
            return v
        if isinstance(v, dict):
            return {scrub(k): scrub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [scrub(x) for x in v]
        return v

    return scrub(value)
