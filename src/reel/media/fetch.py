"""The one SSRF-safe HTTP client for URLs that API callers supply (image URLs, webhooks).

Every outbound request to a caller-chosen URL goes through here, so that one place decides which
addresses are reachable. The rules:

* only ``http``/``https``, and no user name or password in the URL;
* the host is resolved once with ``getaddrinfo`` (which reads every IP spelling — ``2130706433``,
  ``0177.0.0.1``, ``0x7f.1``, ``[::ffff:7f00:1]`` — exactly as the OS would when connecting), and
  the request is refused if *any* resulting address is not public; IPv6 forms that embed an IPv4
  address (IPv4-mapped, NAT64, 6to4, Teredo) are judged by the address they embed too;
* the connection goes to the address that was checked — never a second DNS lookup, which a
  rebinding DNS server could answer differently — with the real name in ``Host`` and, for https,
  in SNI and certificate verification;
* redirects are followed by hand, each ``Location`` resolved and checked before it is contacted;
* bodies are streamed and cut off past ``max_bytes``; a whole fetch has one wall-clock deadline.

Why hand-written: no well-kept Python library combines post-resolution address checks, a pinned
connection to the checked address (with correct SNI/certificate checks) and a recheck on every
redirect on top of httpx. Proxy-style filters that check a name and then let the HTTP client
resolve it again are open to DNS rebinding, and transport-level socket hooks do not see redirects.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from reel import __version__

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_T = TypeVar("_T")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The well-known NAT64 prefix (RFC 6052): 64:ff9b::a.b.c.d reaches IPv4 a.b.c.d through a gateway.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Extra time the caller waits beyond the deadline, so that the worker thread's own, more specific
# timeout error (which fires at the deadline) wins over the generic one.
_DEADLINE_GRACE_S = 0.25
_USER_AGENT = f"reel/{__version__}"
_ONLY_PUBLIC = (
    "only public internet addresses are allowed "
    "(the server setting REEL_ALLOW_PRIVATE_URLS lifts this, for local development)"
)


class FetchError(Exception):
    """A URL could not be fetched. ``message`` says what happened, for the API caller to read."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BlockedAddress(FetchError):
    """The URL's host is, or resolves to, an address that is not on the public internet."""


class _DeadlinePassed(FetchError):
    """Internal: the overall deadline passed; ``_run_with_deadline`` words the public message."""

    def __init__(self) -> None:
        super().__init__("timed out")


@dataclass(frozen=True)
class FetchedResource:
    """A successfully fetched body. ``url`` is the final URL, after redirects."""

    url: str
    content: bytes
    content_type: str | None


@dataclass(frozen=True)
class _Target:
    """A parsed, validated URL, split into what the pinned connection needs."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA-encoded); IPv6 literals without brackets
    port: int
    path: str  # path and query, as sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url_for(self, ip: str) -> str:
        literal = f"[{ip}]" if ":" in ip else ip
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    def extensions(self) -> dict[str, str]:
        # SNI and certificate checks must use the real name, not the IP we connect to. For an IP
        # literal host there is no name: the certificate is checked against the IP itself.
        if self.scheme != "https" or _is_ip_literal(self.host):
            return {}
        return {"sni_hostname": self.host}


# --- address checks -------------------------------------------------------------------------


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses that traffic to ``ip`` may really reach, per the IPv6 transition schemes."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [server, client]
    return []


def _non_public_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None if it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        for inner in embedded:
            reason = _non_public_reason(inner)
            if reason is not None:
                return f"{reason} (embedded in {ip})"
        # IPv4-mapped and NAT64 addresses count as non-global IPv6 in ``ipaddress`` although they
        # are only a way to reach the IPv4 address, which was judged above.
        if embedded and (ip.ipv4_mapped is not None or ip in _NAT64):
            return None
        if ip.is_site_local:
            return "site-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    # ``is_global`` is False for RFC 1918, CGNAT 100.64/10, ULA fc00::/7, documentation and
    # benchmarking ranges; ``is_private``/``is_reserved`` catch ranges some Python versions miss.
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "private or reserved"
    return None


def check_address(ip: IPAddress, *, allow_private: bool) -> None:
    """Raise BlockedAddress unless ``ip`` is a public unicast address (or private ones are allowed)."""
    if allow_private:
        return
    reason = _non_public_reason(ip)
    if reason is not None:
        raise BlockedAddress(f"{ip} is a {reason} address; {_ONLY_PUBLIC}")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_and_check(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing if any of them is blocked.

    All addresses must pass, not just one: the one we would connect to is not known yet, and a
    name mixing public and private addresses is a rebinding trick, not a real deployment.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(f"could not resolve host {host!r}: {exc.strerror}") from None
    except (OSError, UnicodeError, ValueError) as exc:
        raise FetchError(f"could not resolve host {host!r}: {exc}") from None

    addresses: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(f"host {host!r} has no IPv4 or IPv6 address")

    for address in addresses:
        ip = ipaddress.ip_address(address)
        if allow_private:
            continue
        reason = _non_public_reason(ip)
        if reason is None:
            continue
        if _is_ip_literal(host) and ipaddress.ip_address(host) == ip:
            raise BlockedAddress(f"{ip} is a {reason} address; {_ONLY_PUBLIC}")
        raise BlockedAddress(f"host {host!r} resolves to {ip}, a {reason} address; {_ONLY_PUBLIC}")
    return addresses


# --- URL parsing ----------------------------------------------------------------------------


def _parse_url(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        explicit_port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise FetchError(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = f"{scheme}:" if scheme else "a URL without a scheme"
        raise FetchError(f"only http and https URLs are accepted, not {shown}")
    # Credentials in a URL would be sent to whatever host it names (or redirects to); refuse
    # rather than silently dropping them.
    if "@" in parts.netloc:
        raise FetchError("URLs with a user name or password are not accepted")
    host = parts.hostname
    if not host:
        raise FetchError("the URL has no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise FetchError(f"{host!r} is not a valid host name") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    port = explicit_port if explicit_port is not None else _DEFAULT_PORTS[scheme]
    return _Target(url=url, scheme=scheme, host=host, port=port, path=path)


# --- the pinned exchange --------------------------------------------------------------------


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlinePassed()
    return left


@contextmanager
def _exchange(
    target: _Target,
    addresses: list[str],
    method: str,
    *,
    deadline: float,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> Iterator[httpx.Response]:
    """Send one request to the first reachable checked address; yield the streamed response.

    httpx errors raised while the caller reads the body surface here too (at the ``yield``), so
    every one of them becomes a FetchError.
    """
    request_headers = httpx.Headers(headers or {})
    request_headers.setdefault("User-Agent", _USER_AGENT)
    request_headers.setdefault("Accept-Encoding", "identity")
    # Overrides any Host the caller passed: it must name the host whose address we checked.
    request_headers["Host"] = target.host_header
    # A fresh client per exchange: a pooled connection, keyed by IP, must never carry a request
    # for another host name than the one its TLS session was verified for.
    client = httpx.Client(
        follow_redirects=False, trust_env=False, timeout=httpx.Timeout(_remaining(deadline))
    )
    try:
        with client:
            response: httpx.Response | None = None
            last_error: httpx.ConnectError | None = None
            for address in addresses:
                request = client.build_request(
                    method,
                    target.url_for(address),
                    headers=request_headers,
                    content=content,
                    extensions=target.extensions(),
                )
                try:
                    response = client.send(request, stream=True)
                except httpx.ConnectError as exc:
                    last_error = exc  # try the host's next address, as browsers do
                    continue
                break
            if response is None:
                raise FetchError(f"could not connect to {target.host_header}: {_describe(last_error)}")
            try:
                yield response
            finally:
                response.close()
    except httpx.TimeoutException:
        # Each exchange's httpx timeouts are the time left before the deadline, so any of them
        # firing means the deadline has passed.
        raise _DeadlinePassed() from None
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        raise FetchError(f"request to {target.host_header} failed: {_describe(exc)}") from None


def _describe(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    return text or type(exc).__name__


def _read_capped(response: httpx.Response, *, max_bytes: int, deadline: float) -> bytes:
    """Read the body, giving up as soon as it passes ``max_bytes`` or the deadline passes."""
    too_large = FetchError(f"remote file is larger than {max_bytes} bytes")
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    # No chunk_size: chunks come as they arrive, so the deadline is checked even when a server
    # trickles a byte at a time.
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
        _remaining(deadline)
    return bytes(body)


def _run_with_deadline(work: Callable[[], _T], *, timeout_s: float, what: str) -> _T:
    """Run ``work`` on a helper thread; stop waiting for it ``timeout_s`` from now.

    Why a thread: httpx timeouts bound each network operation, not their sum, and getaddrinfo
    has no timeout at all, so a trickling server or a stalled resolver could hold the caller far
    past ``timeout_s``. The abandoned thread ends by itself soon after: every read it does is
    bounded by the same deadline.
    """
    outcome: list[_T] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the waiting thread, which re-raises it
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="reel-fetch", daemon=True).start()
    if not done.wait(timeout_s + _DEADLINE_GRACE_S):
        raise FetchError(f"{what} timed out after {timeout_s:g} s")
    if failure:
        if isinstance(failure[0], _DeadlinePassed):
            raise FetchError(f"{what} timed out after {timeout_s:g} s") from None
        raise failure[0]
    return outcome[0]


# --- public entry points --------------------------------------------------------------------


def validate_public_url(url: str, *, allow_private: bool, timeout_s: float = 10.0) -> None:
    """Check that ``url`` is http(s) and its host resolves only to allowed addresses.

    For URLs stored now and contacted later (webhooks); the later request checks again.
    """

    def work() -> None:
        target = _parse_url(url)
        resolve_and_check(target.host, target.port, allow_private=allow_private)

    _run_with_deadline(work, timeout_s=timeout_s, what="resolving the URL's host")


def fetch_url_safely(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool = False,
    max_redirects: int = 3,
) -> FetchedResource:
    """GET ``url`` under the module's rules; follow up to ``max_redirects`` redirects.

    Raises FetchError (BlockedAddress for a non-public address) with a message for the caller.
    """
    deadline = time.monotonic() + timeout_s

    def work() -> FetchedResource:
        current = url
        for hop in range(max_redirects + 1):
            target = _parse_url(current)
            addresses = resolve_and_check(target.host, target.port, allow_private=allow_private)
            with _exchange(target, addresses, "GET", deadline=deadline) as response:
                location = response.headers.get("Location")
                if response.status_code in _REDIRECT_STATUSES and location:
                    if hop == max_redirects:
                        raise FetchError(f"too many redirects (more than {max_redirects})")
                    current = urljoin(current, location)
                    continue
                if not response.is_success:
                    # "status NNN", never "HTTP 5xx"/"HTTP 429": client SDKs that see those
                    # phrases in an error retry the whole request, which would not help here.
                    raise FetchError(f"URL answered status {response.status_code}")
                content = _read_capped(response, max_bytes=max_bytes, deadline=deadline)
                return FetchedResource(
                    url=current, content=content, content_type=response.headers.get("Content-Type")
                )
        raise AssertionError("unreachable: the loop returns or raises")

    return _run_with_deadline(work, timeout_s=timeout_s, what="fetching the URL")


def post_safely(
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    allow_private: bool = False,
) -> int:
    """POST ``body`` to ``url`` once and return the status code; redirects are not followed.

    A 3xx is returned as it is: re-sending a signed webhook to wherever a receiver points would
    let it bounce our requests at internal hosts. The response body is never read.
    """
    deadline = time.monotonic() + timeout_s

    def work() -> int:
        target = _parse_url(url)
        addresses = resolve_and_check(target.host, target.port, allow_private=allow_private)
        with _exchange(
            target, addresses, "POST", deadline=deadline, headers=headers, content=body
        ) as response:
            return response.status_code

    return _run_with_deadline(work, timeout_s=timeout_s, what="posting to the URL")
