"""The webhook SSRF guard: every non-public destination is refused with a message that
says what it is, judged on resolved addresses. DNS is faked except for `localhost` and
numeric forms, which the system resolves without a network."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from collections.abc import Sequence

import pytest

from core.errors import CosmoError, UnsafeWebhookUrl
from core.webhooks.url_guard import (
    MAX_URL_LENGTH,
    ResolvedTarget,
    WebhookUrl,
    check_webhook_url,
    check_webhook_url_syntax,
    system_resolver,
)
from tests.address_table import ACCEPTED, LITERAL_URLS, NON_STANDARD_NUMERIC_HOSTS, REFUSED


class FakeResolver:
    """Answers from a table and records what it was asked; unknown names don't exist."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int, /) -> Sequence[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


def never_called(host: str, port: int, /) -> Sequence[str]:
    raise AssertionError(f"the resolver should not be asked about {host}")


def check(url: str, *addresses: str, allow_insecure: bool = False) -> ResolvedTarget:
    """Check `url` with its host resolving to `addresses`."""
    host = url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
    return check_webhook_url(
        url, allow_insecure=allow_insecure, resolver=FakeResolver({host: addresses})
    )


# --- Addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "reason", "always"), REFUSED)
def test_non_public_addresses_are_refused(address: str, reason: str, always: bool) -> None:
    with pytest.raises(UnsafeWebhookUrl) as info:
        check("https://hook.example/x", address)
    message = info.value.detail
    assert message.startswith(f"hook.example resolves to {ipaddress.ip_address(address)}, ")
    assert reason in message
    assert "public addresses" in message
    assert ("insecure webhooks" in message) is not always


@pytest.mark.parametrize(("address", "reason", "always"), REFUSED)
def test_allow_insecure_relaxes_only_loopback_and_private(
    address: str, reason: str, always: bool
) -> None:
    if always:
        with pytest.raises(UnsafeWebhookUrl, match="public addresses"):
            check("http://hook.example/x", address, allow_insecure=True)
    else:
        target = check("http://hook.example/x", address, allow_insecure=True)
        assert len(target.addresses) == 1


@pytest.mark.parametrize(("address", "normalised"), ACCEPTED)
def test_public_addresses_are_accepted(address: str, normalised: str) -> None:
    target = check("https://hook.example/x", address)
    assert target.addresses == (normalised,)


def test_the_message_names_the_address_and_what_it_is() -> None:
    with pytest.raises(UnsafeWebhookUrl) as info:
        check("https://internal.example/hook", "10.0.0.5")
    assert info.value.detail == (
        "internal.example resolves to 10.0.0.5, a private address; webhooks may only be "
        "sent to public addresses (allowed only when insecure webhooks are enabled for "
        "local development)"
    )


@pytest.mark.parametrize(
    "answers",
    [
        ["8.8.8.8", "10.0.0.5"],
        ["10.0.0.5", "8.8.8.8"],
        ["2606:4700:4700::1111", "8.8.8.8", "fd00::5"],
        ["8.8.8.8", "169.254.169.254"],
    ],
)
def test_one_private_answer_among_public_ones_refuses_the_url(answers: list[str]) -> None:
    # Otherwise an attacker's DNS answers with both and hopes we connect to the second.
    with pytest.raises(UnsafeWebhookUrl, match=f"resolves to {answers[-1]}|resolves to 10"):
        check("https://hook.example/x", *answers)


def test_all_validated_addresses_are_returned_once_in_order() -> None:
    target = check(
        "https://hook.example/x",
        "2606:4700:4700::1111",
        "8.8.8.8",
        "8.8.8.8",
        "::ffff:8.8.8.8",
        "1.1.1.1",
    )
    assert target.addresses == ("2606:4700:4700::1111", "8.8.8.8", "1.1.1.1")


# --- IP literals in the URL ---------------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), LITERAL_URLS)
def test_ip_literals_are_judged_without_dns(url: str, message: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=re.escape(message)):
        check_webhook_url_syntax(url, allow_insecure=False)
    with pytest.raises(UnsafeWebhookUrl, match="public addresses"):
        check_webhook_url(url, allow_insecure=False, resolver=never_called)


def test_public_ip_literals_are_accepted_without_dns() -> None:
    target = check_webhook_url(
        "https://[2606:4700:4700::1111]:8443/hook", allow_insecure=False, resolver=never_called
    )
    assert target.host == "2606:4700:4700::1111"
    assert target.addresses == ("2606:4700:4700::1111",)
    assert target.host_header == "[2606:4700:4700::1111]:8443"
    v4 = check_webhook_url("https://8.8.8.8/hook", allow_insecure=False, resolver=never_called)
    assert v4.addresses == ("8.8.8.8",)
    assert v4.host_header == "8.8.8.8"


@pytest.mark.parametrize("host", NON_STANDARD_NUMERIC_HOSTS)
def test_non_standard_numeric_hosts_are_refused_offline(host: str) -> None:
    for allow_insecure in (False, True):
        with pytest.raises(UnsafeWebhookUrl, match="non-standard form"):
            check_webhook_url_syntax(f"https://{host}/hook", allow_insecure=allow_insecure)


@pytest.mark.parametrize("host", ["0177.0.0.1", "2130706433", "0x7f.0.0.1", "127.1"])
def test_numeric_forms_reach_loopback_through_the_real_resolver(host: str) -> None:
    # Why strings are never judged: the system resolver reads all of these as 127.0.0.1.
    assert system_resolver(host, 443) == ["127.0.0.1"]
    with pytest.raises(UnsafeWebhookUrl):
        check_webhook_url(f"https://{host}/hook", allow_insecure=False)
    # A name whose DNS answer is one of these forms is judged by the address it reaches.
    alias = FakeResolver({"alias.example": system_resolver(host, 443)})
    with pytest.raises(
        UnsafeWebhookUrl, match=re.escape("resolves to 127.0.0.1, a loopback address")
    ):
        check_webhook_url("https://alias.example/hook", allow_insecure=False, resolver=alias)


def test_localhost_is_refused_through_the_real_resolver_and_offline() -> None:
    for url in ("https://localhost/hook", "https://localhost./", "https://api.localhost/"):
        with pytest.raises(UnsafeWebhookUrl, match="loopback"):
            check_webhook_url_syntax(url, allow_insecure=False)
    answers = system_resolver("localhost", 443)
    alias = FakeResolver({"alias.example": answers})
    with pytest.raises(UnsafeWebhookUrl, match="a loopback address"):
        check_webhook_url("https://alias.example/hook", allow_insecure=False, resolver=alias)


def test_allow_insecure_permits_local_development_targets() -> None:
    target = check_webhook_url("http://127.0.0.1:8080", allow_insecure=True)
    assert target == ResolvedTarget(
        url="http://127.0.0.1:8080",
        scheme="http",
        host="127.0.0.1",
        port=8080,
        target="/",
        addresses=("127.0.0.1",),
    )
    assert target.host_header == "127.0.0.1:8080"
    local = check_webhook_url("http://localhost:8080/hook", allow_insecure=True)
    assert local.addresses
    assert set(local.addresses) <= {"127.0.0.1", "::1"}


# --- URL shape ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://hook.example/x", "HTTP://hook.example/x"],
)
def test_http_is_refused_unless_insecure_is_allowed(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match="must use https, not http"):
        check(url, "8.8.8.8")
    assert check(url, "8.8.8.8", allow_insecure=True).scheme == "http"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hook.example/x",
        "file:///etc/passwd",
        "gopher://hook.example:70/_",
        "javascript:alert(1)",
        "hook.example/x",
        "//hook.example/x",
        "wss://hook.example/x",
        "",
    ],
)
def test_other_schemes_are_refused(url: str) -> None:
    for allow_insecure in (False, True):
        with pytest.raises(UnsafeWebhookUrl, match="absolute https:// URL"):
            check_webhook_url_syntax(url, allow_insecure=allow_insecure)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:s3cret-pw@hook.example/x",
        "https://user@hook.example/x",
        "https://:s3cret-pw@hook.example/x",
        "https://@hook.example/x",
        "https://hook.example@169.254.169.254/",
        "https://8.8.8.8:443@10.0.0.5/",
    ],
)
def test_credentials_in_the_url_are_refused_without_echoing_them(url: str) -> None:
    for allow_insecure in (False, True):
        with pytest.raises(UnsafeWebhookUrl, match="must not contain credentials") as info:
            check_webhook_url_syntax(url, allow_insecure=allow_insecure)
        assert "s3cret" not in info.value.detail


@pytest.mark.parametrize(
    "url",
    ["https://", "https:///hook", "https://:443/hook", "https://?x", "https://#frag"],
)
def test_a_host_is_required(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match="has no host"):
        check_webhook_url_syntax(url, allow_insecure=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://hook.example:99999/",
        "https://hook.example:-1/",
        "https://hook.example:abc/",
        "https://hook.example:0/",
    ],
)
def test_invalid_ports_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match="invalid port"):
        check_webhook_url_syntax(url, allow_insecure=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://hook.example\\@169.254.169.254/",
        "https://hook.example/\\..\\",
        "https://hook .example/",
        "https://hook.example/ x",
        "https://hook.example/\tx",
        "https://169.254.169.254\t.hook.example/",
        "https://hook.example\n/x",
        "https://hook.example/\x00",
        "https://hook.example/\x7f",
        "https://hook.example/\u200bx",
        "https://hook.example/\u2028",
        " https://hook.example/",
        "https://hook.example/\r\nHost: evil",
    ],
)
def test_urls_that_parsers_could_disagree_about_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match="whitespace, a backslash or a control"):
        check_webhook_url_syntax(url, allow_insecure=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://%31%32%37.0.0.1/",
        "https://hook..example/",
        "https://hook.example*/",
        "https://hook!example/",
        "https://[not-ipv6]/",
        "https://" + "a" * 64 + ".example/",
    ],
)
def test_malformed_hosts_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=r"not a valid|not an IPv6"):
        check_webhook_url_syntax(url, allow_insecure=False)


def test_overlong_urls_are_refused() -> None:
    url = "https://hook.example/" + "a" * MAX_URL_LENGTH
    with pytest.raises(UnsafeWebhookUrl, match=f"longer than {MAX_URL_LENGTH}"):
        check_webhook_url_syntax(url, allow_insecure=False)


# --- Resolution ---------------------------------------------------------------------------


def test_dns_failure_says_the_host_could_not_be_resolved() -> None:
    with pytest.raises(
        UnsafeWebhookUrl, match=re.escape("could not resolve nowhere.example: Name or ser")
    ):
        check_webhook_url(
            "https://nowhere.example/x", allow_insecure=False, resolver=FakeResolver({})
        )


def test_an_empty_answer_is_a_resolution_failure() -> None:
    with pytest.raises(
        UnsafeWebhookUrl, match=re.escape("could not resolve hook.example: no addresses")
    ):
        check("https://hook.example/x")


def test_a_resolver_error_without_errno_is_still_reported() -> None:
    def broken(host: str, port: int, /) -> Sequence[str]:
        raise UnicodeError("label too long")

    with pytest.raises(
        UnsafeWebhookUrl, match=re.escape("could not resolve hook.example: label too long")
    ):
        check_webhook_url("https://hook.example/", allow_insecure=False, resolver=broken)


def test_resolver_answers_that_are_not_addresses_are_refused() -> None:
    with pytest.raises(UnsafeWebhookUrl, match="returned 'localhost', not an IP address"):
        check("https://hook.example/x", "localhost")


def test_the_resolver_gets_the_ascii_host_and_the_port() -> None:
    resolver = FakeResolver({"xn--bcher-kva.example": ["8.8.8.8"], "hook.example": ["8.8.8.8"]})
    target = check_webhook_url(
        "https://B\u00fccher.Example:8443/in?x=1", allow_insecure=False, resolver=resolver
    )
    assert resolver.calls == [("xn--bcher-kva.example", 8443)]
    assert target.host == "xn--bcher-kva.example"
    assert target.host_header == "xn--bcher-kva.example:8443"
    check_webhook_url("https://HOOK.example/", allow_insecure=False, resolver=resolver)
    assert resolver.calls[-1] == ("hook.example", 443)


def test_the_resolved_target_carries_what_the_sender_needs() -> None:
    target = check("https://hook.example/a/b?c=1&d=2#fragment", "8.8.8.8", "2606:4700::1")
    assert target == ResolvedTarget(
        url="https://hook.example/a/b?c=1&d=2",
        scheme="https",
        host="hook.example",
        port=443,
        target="/a/b?c=1&d=2",
        addresses=("8.8.8.8", "2606:4700::1"),
    )
    assert target.host_header == "hook.example"
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.addresses = ("10.0.0.5",)  # type: ignore[misc]


def test_syntax_check_needs_no_dns_and_returns_the_parts() -> None:
    parsed = check_webhook_url_syntax("https://intranet.corp:444/x?y", allow_insecure=False)
    assert parsed == WebhookUrl(
        url="https://intranet.corp:444/x?y",
        scheme="https",
        host="intranet.corp",
        port=444,
        target="/x?y",
    )
    assert not isinstance(parsed, ResolvedTarget)


def test_hosts_with_underscores_and_trailing_dots_are_allowed() -> None:
    assert check("https://my_hook.example./x", "8.8.8.8").host == "my_hook.example."


def test_unsafe_webhook_url_is_a_cosmo_error() -> None:
    with pytest.raises(CosmoError) as info:
        check("https://hook.example/x", "10.0.0.5")
    assert info.value.title == "Unsafe webhook URL"


def test_a_save_refuses_a_name_that_resolves_to_a_private_address():
    from core.webhooks.url_guard import check_webhook_url_when_saved

    with pytest.raises(UnsafeWebhookUrl, match=r"10\.1\.2\.3"):
        check_webhook_url_when_saved(
            "https://hooks.internal.example/x",
            allow_insecure=False,
            resolver=lambda host, port: ["10.1.2.3"],
        )


def test_a_save_accepts_a_name_that_does_not_resolve_yet():
    from core.webhooks.url_guard import check_webhook_url_when_saved

    def unresolvable(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    saved = check_webhook_url_when_saved(
        "https://hooks.not-yet.example/x", allow_insecure=False, resolver=unresolvable
    )
    assert saved.host == "hooks.not-yet.example"
    with pytest.raises(UnsafeWebhookUrl, match="http"):
        check_webhook_url_when_saved(
            "http://hooks.not-yet.example/x", allow_insecure=False, resolver=unresolvable
        )
