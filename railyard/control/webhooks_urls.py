"""Which URLs a webhook may call (no SSRF): http or https only, and a host whose every address
is a public one; a host resolving to a loopback, private, link-local (cloud metadata:
169.254.169.254, fd00:ec2::254), shared, reserved or multicast address is refused unless the
operator named it in RAILYARD_WEBHOOK_ALLOWED_HOSTS (exactly as written in the URL). The
dispatcher checks again before every attempt: DNS answers change."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection
from urllib.parse import urlsplit

from railyard.errors import SpecError

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (getaddrinfo)."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port,
                                                                 type=socket.SOCK_STREAM)})


def blocked_reason(address: str) -> str | None:
    """Why a webhook may not call ``address`` (None: a public address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, name in ((ip.is_loopback, "loopback"), (ip.is_unspecified, "unspecified"),
                       (ip.is_link_local, "link-local (cloud metadata lives there)"),
                       (ip.is_private, "private"), (ip.is_multicast, "multicast"),
                       (ip.is_reserved, "reserved")):
        if test:
            return name
    return None if ip.is_global else "not public"


def _refuse(url: str, why: str) -> SpecError:
    return SpecError(f"url: {why}", details=[{"field": "url", "message": why, "url": url}])


def check_url(url: str, *, allowed_hosts: Collection[str],
              resolver: Resolver = resolve) -> str:
    """``url`` if a webhook may call it, else a SpecError (422) naming ``url`` and the fix."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise _refuse(url, f"not a valid URL ({exc}); send an http(s) URL") from None
    if parts.scheme not in ("http", "https"):
        raise _refuse(url, f"scheme {parts.scheme or '(none)'!r} is not allowed; a webhook "
                           "URL starts with https:// (or http://)")
    host = parts.hostname
    if not host:
        raise _refuse(url, "the URL has no host; send e.g. https://hooks.example.com/railyard")
    if parts.username or parts.password:
        raise _refuse(url, "credentials in the URL are not allowed; the request is signed "
                           "with the webhook's secret instead")
    if host in {h.lower() for h in allowed_hosts}:
        return url
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise _refuse(url, f"host {host!r} does not resolve ({exc}); send a host name "
                           "the API server can resolve") from None
    for address in addresses:
        reason = blocked_reason(address)
        if reason:
            raise _refuse(url, f"host {host!r} resolves to {address} ({reason} address), "
                               "which webhooks may not call; use a public host, or ask the "
                               "operator to add it to RAILYARD_WEBHOOK_ALLOWED_HOSTS")
    if not addresses:
        raise _refuse(url, f"host {host!r} resolves to no address")
    return url
