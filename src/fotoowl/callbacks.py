"""Callback URLs: where an import or a watch also sends its webhook events.

A callback URL is user input, and the worker POSTs to it from inside the deployment: left unchecked it
would let anyone who can start an import make the server call its own private network (SSRF). So a
callback must be plain http(s), carry no credentials, and name a host that is (and resolves to) a
public address, unless FOTOOWL_WEBHOOK_ALLOW_PRIVATE_HOSTS is on. FOTOOWL_WEBHOOK_URL is the
admin's own setting and is trusted as it is.

The host is checked when the URL is given and again at every delivery, since DNS can change in
between; `guarded_resolver` closes the last gap, a name that resolves differently by connect time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from fotoowl.config import AppSettings
from fotoowl.models import MAX_URL_CHARS

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(OSError):
    """A callback's host is, or resolves to, an address callbacks may not reach."""


class UnresolvableHost(ValueError):
    """A callback's host name does not resolve (perhaps only for now: at delivery it is retried)."""


def check_callback_url(url: str, settings: AppSettings) -> str:
    """The URL, stripped of surrounding blanks, or ValueError saying what is wrong with it.

    Resolves the host name (blocking): from a coroutine, call `verify_callback_url` instead."""
    url = url.strip()
    if not url:
        raise ValueError("'callback_url' is empty.")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"'callback_url' is longer than {MAX_URL_CHARS} characters.")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise ValueError("'callback_url' contains a space or a control character.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("'callback_url' is not a URL.") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("'callback_url' must start with http:// or https://.")
    if parts.username is not None or parts.password is not None:
        raise ValueError("'callback_url' must not carry a user name or password; put a token in its path or query.")
    host = parts.hostname
    if not host:
        raise ValueError("'callback_url' has no host.")
    if not settings.webhook_secret:
        raise ValueError("This server has no FOTOOWL_WEBHOOK_SECRET to sign webhooks with, so no 'callback_url'.")
    if settings.webhook_allow_private_hosts:
        return url
    for address in _addresses(host, port or (443 if parts.scheme == "https" else 80)):
        if problem := address_problem(address):
            raise ValueError(f"'callback_url' names {host}, which is {problem}; callbacks must go to public hosts.")
    return url


async def verify_callback_url(url: str, settings: AppSettings) -> str:
    """`check_callback_url` off the event loop (resolving a name can take seconds)."""
    return await asyncio.to_thread(check_callback_url, url, settings)


def _addresses(host: str, port: int) -> list[IpAddress]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnresolvableHost(f"'callback_url' names {host}, which could not be resolved.") from None
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None


def address_problem(address: IpAddress) -> str | None:
    """Why a callback may not reach `address`, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for problem, applies in (
        ("a loopback address", address.is_loopback),
        ("an unspecified address", address.is_unspecified),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved),
    ):
        if applies:
            return f"{problem} ({address})"
    # Shared (carrier-grade NAT), documentation and other special ranges.
    if not address.is_global:
        return f"not a public address ({address})"
    return None


class GuardedResolver(AbstractResolver):
    """Resolves as aiohttp does, then refuses the name if any of its addresses is not public, so the
    address connected to is the address checked (no second lookup an attacker's DNS could change)."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = _literal(result["host"])
            problem = "an unparseable address" if address is None else address_problem(address)
            if problem:
                raise RefusedAddress(f"{host} resolves to {problem}; callbacks must go to public hosts")
        return results

    async def close(self) -> None:
        await self._inner.close()
