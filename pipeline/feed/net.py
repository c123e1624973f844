"""Which URLs a feed may make us fetch, and a GET that checks every redirect hop against that policy.

A feed is foreign text: an enclosure URL can point at ``file:///etc/passwd``, at the cloud's metadata address
(169.254.169.254) or at a service on the private network. Only http(s) is fetched, and the host is resolved and
every address it resolves to must be public, before the first request and again at every redirect hop. Tests serve
from 127.0.0.1, so the policy is a parameter; the default refuses every private range.

Known limit: the check resolves the name, then httpx resolves it again to connect (a DNS-rebinding race). Run the
command where the network itself keeps it away from private services if the feed is hostile.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from pipeline.errors import FeedError

MAX_REDIRECTS = 5
USER_AGENT = "sts-pipeline (podcast back-catalog)"


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses may be contacted. The default refuses loopback, private, link-local and the rest."""

    allow_loopback: bool = False
    allow_private: bool = False

    def refuses(self, address: str) -> str | None:
        """Why ``address`` may not be contacted, or None when it may."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback:
            return None if self.allow_loopback else "a loopback address"
        if ip.is_link_local:
            return "a link-local address (such as a cloud metadata service)"
        if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
            return "a reserved address"
        if ip.is_private or not ip.is_global:
            return None if self.allow_private else "a private address"
        return None


#: the default: public addresses only (loopback, private, link-local and the like refused)
DEFAULT_POLICY = AddressPolicy()


#: the policy tests use: their servers listen on 127.0.0.1
LOOPBACK_ALLOWED = AddressPolicy(allow_loopback=True)


def check_url(url: str, policy: AddressPolicy) -> None:
    """Refuse (``FeedError``) a URL that is not http(s), has no host, or whose host resolves to a refused address."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise FeedError(f"{url!r} is not an http(s) URL ({parts.scheme or 'no'} scheme): only http(s) is fetched")
    host = parts.hostname
    if not host:
        raise FeedError(f"{url!r} has no host")
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise FeedError(f"the host of {url!r} does not resolve ({error}): check the URL") from None
    for info in infos:
        address = str(info[4][0])
        why = policy.refuses(address)
        if why:
            raise FeedError(f"{url!r} resolves to {address}, {why}: refused (only public addresses are fetched)")


def client(*, timeout_s: float) -> httpx.Client:
    """An httpx client that follows no redirect by itself (``open_checked`` follows them, checking each)."""
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
    return httpx.Client(follow_redirects=False, timeout=timeout, headers={"User-Agent": USER_AGENT})


@contextmanager
def open_checked(http: httpx.Client, url: str, policy: AddressPolicy, *,
                 method: str = "GET") -> Iterator[httpx.Response]:
    """A streamed response for ``url`` after following redirects, each hop checked by ``check_url``.

    A status other than 2xx is a ``FeedError`` naming it; the response's ``url`` is the final one.
    """
    for _hop in range(MAX_REDIRECTS + 1):
        check_url(url, policy)
        try:
            request = http.build_request(method, url)
            response = http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise FeedError(f"{url!r} did not answer: {type(error).__name__} {error}") from None
        if response.is_redirect and "location" in response.headers:
            location = response.headers["location"]
            response.close()
            url = urljoin(url, location)
            continue
        try:
            if not response.is_success:
                raise FeedError(f"{url!r} answered HTTP {response.status_code}")
            yield response
        finally:
            response.close()
        return
    raise FeedError(f"{url!r}: more than {MAX_REDIRECTS} redirects")
