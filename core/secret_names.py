"""Which environment variables a skill or a webhook may read.

Admins (over REST, Slack or a config file) name variables in `secret_headers` and a webhook's
`secret_env`; the operator decides which names they may use. Cosmo's own variables and those
its SDKs read are never readable this way: a skill aimed at an outside URL with
`X-A: COSMO_API_TOKEN` would hand our root key to whoever runs that URL. The operator's
`COSMO_SKILL_SECRETS` (glob patterns) narrows the rest further.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import CosmoError

#: Prefixes of variables Cosmo or the SDKs it runs (Slack, Anthropic, boto3, mem0, Voyage,
#: libpq, OpenTelemetry: OTEL_EXPORTER_OTLP_HEADERS often holds a collector's API key)
#: read. New settings tend to land under these, so a prefix beats a list.
RESERVED_PREFIXES = (
    "COSMO_",
    "SLACK_",
    "ANTHROPIC_",
    "AWS_",
    "MEM0_",
    "VOYAGE_",
    "PG",
    "OTEL_",
)
RESERVED_NAMES = frozenset({"DATABASE_URL"})

SecretLookup = Callable[[str], str | None]


def settings_names() -> frozenset[str]:
    """Every `Settings` field name and alias, upper-cased as variables are spelled."""
    from core.settings import Settings  # the class only: nothing reads the environment here

    names: set[str] = set()
    for name, info in Settings.model_fields.items():
        names.add(name.upper())
        if info.alias:
            names.add(info.alias.upper())
    return frozenset(names)


def parse_patterns(text: str) -> tuple[str, ...]:
    """`COSMO_SKILL_SECRETS` as a tuple of glob patterns (comma-separated, blanks ignored)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


class SecretNotAllowed(CosmoError):
    """A variable name a skill or webhook may not read; the message names the rule."""

    title = "Secret not allowed"


@dataclass(frozen=True)
class SecretNameRule:
    """Decides whether a skill or webhook may read an environment variable by name.

    `allowed` holds the operator's `COSMO_SKILL_SECRETS` patterns: empty means every name
    outside the reserved ones; otherwise a name must match one of them as well.
    """

    allowed: tuple[str, ...] = ()
    reserved: frozenset[str] = field(default_factory=settings_names)

    def refusal(self, name: str, *, by_operator: bool = False) -> str | None:
        """Why `name` may not be read, or None when it may.

        `by_operator`: the name comes from the operator's own files (`COSMO_MCP_SERVERS`), so
        only the reserved names apply, not the narrowing meant for admins.
        """
        upper = name.upper()
        if upper in RESERVED_NAMES or upper.startswith(RESERVED_PREFIXES):
            return (
                f"{name} is reserved: skills and webhooks may not read Cosmo's own or its "
                f"SDKs' variables ({', '.join(p + '*' for p in RESERVED_PREFIXES)}, "
                f"{', '.join(sorted(RESERVED_NAMES))}); store the secret under a name of its "
                "own, such as CRM_AUTH_HEADER"
            )
        if upper in self.reserved:
            return (
                f"{name} is reserved: it is one of Cosmo's settings, which skills and "
                "webhooks may not read"
            )
        narrowed = not by_operator and self.allowed
        if narrowed and not any(fnmatch.fnmatchcase(name, p) for p in self.allowed):
            return (
                f"{name} is not allowed by COSMO_SKILL_SECRETS (the operator allows only "
                f"{', '.join(self.allowed)})"
            )
        return None

    def confine(self, lookup: SecretLookup) -> SecretLookup:
        """`lookup`, refusing (with `SecretNotAllowed`) every name this rule refuses.

        Rows saved before the rule existed must not leak at call time either.
        """

        def confined(name: str) -> str | None:
            reason = self.refusal(name)
            if reason is not None:
                raise SecretNotAllowed(reason)
            return lookup(name)

        return confined
