"""The SSRF-safe fetcher against real HTTP servers on loopback ("canaries").

Each canary records every TCP connection it accepts, so "blocked" means provably never
contacted, not merely "an error came back". No network call is mocked; where a test needs a
public-looking host name, only the resolver (``resolve_and_check``) is replaced.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from reel.media import fetch
from reel.media.fetch import (
    BlockedAddress,
    FetchError,
    check_address,
    fetch_url_safely,
    post_safely,
    resolve_and_check,
    validate_public_url,
)

BIG = 64 * 1024 * 1024  # far more than loopback socket buffers can absorb


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Canary:
    host: str
    port: int
    connections: list[tuple[str, int]] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    handler_done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/", host: str | None = None) -> str:
        shown = host if host is not None else (f"[{self.host}]" if ":" in self.host else self.host)
        return f"http://{shown}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    canary: Canary  # set on a per-server subclass

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.canary.requests.append(
            Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        try:
            self._route()
        finally:
            self.canary.handler_done.set()

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, key: str, total: int, chunk: int = 64 * 1024) -> None:
        sent = 0
        try:
            while sent < total and not self.canary.stop.is_set():
                self.wfile.write(b"x" * chunk)
                sent += chunk
        except OSError:
            pass  # the client hung up, which is what the size-cap tests want
        self.canary.bytes_sent[key] = sent

    def _route(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        path = parts.path
        if path == "/ok":
            self._reply(200, b"hello", {"Content-Type": "image/png"})
        elif path.startswith("/r/"):
            left = int(path.rsplit("/", 1)[1])
            if left == 0:
                self._reply(200, b"end of chain")
            else:
                self._reply(302, headers={"Location": f"/r/{left - 1}"})  # relative on purpose
        elif path == "/redirect":
            self._reply(302, headers={"Location": query["to"][0]})
        elif path == "/status":
            self._reply(int(query["code"][0]), b"nope")
        elif path == "/big-length":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            self._stream("big-length", BIG)
        elif path == "/big-stream":
            self.send_response(200)  # no Content-Length: body runs until the connection closes
            self.end_headers()
            self._stream("big-stream", BIG)
        elif path == "/slow":
            self.canary.stop.wait(10)
            self._reply(200, b"too late")
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                while not self.canary.stop.is_set():
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    self.canary.stop.wait(0.05)
            except OSError:
                pass
        else:
            self._reply(200, b"canary")


def _start_canary(host: str, family: socket.AddressFamily) -> tuple[Canary, ThreadingHTTPServer]:
    canary = Canary(host=host, port=0)
    handler = type("Handler", (_Handler,), {"canary": canary})

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

        def verify_request(self, request: object, client_address: object) -> bool:
            # Every accepted connection is logged, whether or not a request follows.
            canary.connections.append(client_address)  # type: ignore[arg-type]
            return True

    server = Server((host, 0), handler)
    canary.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return canary, server


@pytest.fixture
def make_canary() -> Iterator[Callable[..., Canary]]:
    servers: list[tuple[Canary, ThreadingHTTPServer]] = []

    def make(host: str = "127.0.0.1") -> Canary:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        started = _start_canary(host, family)
        servers.append(started)
        return started[0]

    yield make
    for canary, server in servers:
        canary.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def canary(make_canary: Callable[..., Canary]) -> Canary:
    return make_canary()


@pytest.fixture
def canary6(make_canary: Callable[..., Canary]) -> Canary:
    try:
        return make_canary("::1")
    except OSError as exc:
        pytest.skip(f"cannot bind an IPv6 canary on ::1 here: {exc}")


def fetch_url(url: str, **kwargs: object) -> fetch.FetchedResource:
    options: dict[str, object] = {"max_bytes": 1024 * 1024, "timeout_s": 3.0}
    options.update(kwargs)
    return fetch_url_safely(url, **options)  # type: ignore[arg-type]


# --- blocked addresses are never contacted ----------------------------------------------------

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "localhost",
    "2130706433",  # decimal
    "0177.0.0.1",  # octal
    "0x7f.0.0.1",  # hex
    "0x7f000001",
    "127.1",  # short form
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::ffff:7f00:1]",
    "0.0.0.0",  # Linux connects this to the local host
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_loopback_spellings_blocked_and_never_contacted(canary: Canary, host: str) -> None:
    url = canary.url("/ok", host=host)
    with pytest.raises(BlockedAddress) as info:
        fetch_url(url)
    assert "only public internet addresses" in info.value.message
    with pytest.raises(BlockedAddress):
        post_safely(url, body=b"{}", headers={}, timeout_s=3)
    with pytest.raises(BlockedAddress):
        validate_public_url(url, allow_private=False)
    assert canary.connections == []

    # Control: the same spelling does reach the canary when private addresses are allowed, so
    # the empty log above means "refused", not "unreachable anyway".
    assert fetch_url(url, allow_private=True).content == b"hello"
    assert len(canary.connections) == 1


def test_ipv6_loopback_blocked_and_never_contacted(canary6: Canary) -> None:
    url = canary6.url("/ok")
    assert url.startswith("http://[::1]:")
    with pytest.raises(BlockedAddress):
        fetch_url(url)
    with pytest.raises(BlockedAddress):
        post_safely(url, body=b"", headers={}, timeout_s=3)
    assert canary6.connections == []
    assert fetch_url(url, allow_private=True).content == b"hello"
    assert len(canary6.connections) == 1


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",  # cloud metadata
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # CGNAT
        "0.0.0.0",
        "224.0.0.1",  # multicast
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "[fe80::1]",
        "[fd00::1]",  # ULA
        "[::]",
        "[ff02::1]",
        "[fec0::1]",  # site-local
        "[2002:7f00:1::1]",  # 6to4 wrapping 127.0.0.1
        "[64:ff9b::a9fe:a9fe]",  # NAT64 wrapping 169.254.169.254
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo
    ],
)
def test_private_and_special_addresses_blocked(host: str) -> None:
    # Nothing listens on these; a connection attempt would show up as a timeout or connect
    # error, not as BlockedAddress raised before any socket is opened.
    with pytest.raises(BlockedAddress):
        fetch_url(f"http://{host}/latest/meta-data/", timeout_s=1)
    with pytest.raises(BlockedAddress):
        validate_public_url(f"https://{host}/hook", allow_private=False)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_addresses_pass(address: str) -> None:
    check_address(ipaddress.ip_address(address), allow_private=False)


def test_check_address_allow_private() -> None:
    check_address(ipaddress.ip_address("127.0.0.1"), allow_private=True)
    with pytest.raises(BlockedAddress, match="loopback"):
        check_address(ipaddress.ip_address("::ffff:127.0.0.1"), allow_private=False)


def test_resolve_and_check_returns_checked_addresses() -> None:
    assert resolve_and_check("127.0.0.1", 80, allow_private=True) == ["127.0.0.1"]
    with pytest.raises(BlockedAddress, match="'localhost' resolves to"):
        resolve_and_check("localhost", 80, allow_private=False)


# --- redirects ----------------------------------------------------------------------------------


def test_redirect_chain_within_limit(canary: Canary) -> None:
    result = fetch_url(canary.url("/r/3"), allow_private=True)
    assert result.content == b"end of chain"
    assert result.url == canary.url("/r/0")
    assert [seen.path for seen in canary.requests] == ["/r/3", "/r/2", "/r/1", "/r/0"]


def test_too_many_redirects(canary: Canary) -> None:
    with pytest.raises(FetchError, match="too many redirects"):
        fetch_url(canary.url("/r/4"), allow_private=True)
    assert len(canary.requests) == 4  # the fourth redirect is not followed


@pytest.fixture
def public_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let made-up *.example names resolve to loopback, as if they were public hosts."""
    real = fetch.resolve_and_check

    def resolver(host: str, port: int, *, allow_private: bool) -> list[str]:
        if host.endswith(".example"):
            return ["127.0.0.1"]
        return real(host, port, allow_private=allow_private)

    monkeypatch.setattr(fetch, "resolve_and_check", resolver)


@pytest.mark.parametrize("target_host", ["127.0.0.1", "localhost", "2130706433"])
@pytest.mark.usefixtures("public_example")
def test_redirect_to_blocked_address_refused(make_canary: Callable[..., Canary], target_host: str) -> None:
    first, second = make_canary(), make_canary()
    inner = second.url("/ok", host=target_host)
    with pytest.raises(BlockedAddress):
        fetch_url(first.url(f"/redirect?to={inner}", host="public.example"))
    assert [seen.path for seen in first.requests] == [f"/redirect?to={inner}"]
    assert second.connections == []


@pytest.mark.usefixtures("public_example")
def test_redirect_to_other_scheme_refused(canary: Canary) -> None:
    with pytest.raises(FetchError, match="only http and https"):
        fetch_url(canary.url("/redirect?to=file:///etc/passwd", host="public.example"))


# --- pinned connection ---------------------------------------------------------------------------


@pytest.mark.usefixtures("public_example")
def test_connects_to_checked_address_with_real_host_header(canary: Canary) -> None:
    # made-up.example has no DNS record: reaching the canary at all proves no second lookup.
    result = fetch_url(canary.url("/ok?x=1", host="made-up.example"))
    assert result.content == b"hello"
    assert result.content_type == "image/png"
    assert canary.requests[0].headers["host"] == f"made-up.example:{canary.port}"
    assert canary.requests[0].path == "/ok?x=1"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a certificate")
@pytest.mark.usefixtures("public_example")
def test_https_uses_real_name_for_sni_and_verifies_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=made-up.example", "-addext", "subjectAltName=DNS:made-up.example",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True):
                pass
        except OSError:
            pass  # the client rejects our self-signed certificate, as it must

    server = threading.Thread(target=serve_one, daemon=True)
    server.start()
    try:
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch_url(f"https://made-up.example:{port}/x.png")
    finally:
        server.join(5)
        listener.close()
    assert names == ["made-up.example"]


# --- size, time, status --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/big-length", "/big-stream"])
def test_size_cap_stops_early(canary: Canary, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_url(canary.url(path), allow_private=True, max_bytes=100_000)
    assert info.value.message == "remote file is larger than 100000 bytes"
    assert time.monotonic() - started < 2
    assert canary.handler_done.wait(5)
    assert canary.bytes_sent[path.strip("/")] < BIG


def test_exact_size_allowed(canary: Canary) -> None:
    assert fetch_url(canary.url("/ok"), allow_private=True, max_bytes=5).content == b"hello"
    with pytest.raises(FetchError, match="larger than 4 bytes"):
        fetch_url(canary.url("/ok"), allow_private=True, max_bytes=4)


@pytest.mark.parametrize("path", ["/slow", "/trickle"])
def test_overall_deadline(canary: Canary, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_url(canary.url(path), allow_private=True, timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert info.value.message == "fetching the URL timed out after 0.5 s"
    assert 0.4 < elapsed < 1.5


@pytest.mark.parametrize("code", [404, 403, 429, 500, 503])
def test_error_status(canary: Canary, code: int) -> None:
    with pytest.raises(FetchError) as info:
        fetch_url(canary.url(f"/status?code={code}"), allow_private=True)
    message = info.value.message
    assert message == f"URL answered status {code}"
    assert "HTTP 5" not in message and "HTTP 429" not in message


def test_redirect_without_location_is_an_error(canary: Canary) -> None:
    with pytest.raises(FetchError, match="status 302"):
        fetch_url(canary.url("/status?code=302"), allow_private=True)


# --- post_safely ---------------------------------------------------------------------------------


def test_post_does_not_follow_redirects(canary: Canary) -> None:
    status = post_safely(
        canary.url(f"/redirect?to={canary.url('/elsewhere')}"),
        body=b'{"id": 1}',
        headers={"Content-Type": "application/json", "X-Signature": "abc", "Host": "evil.example"},
        timeout_s=3,
        allow_private=True,
    )
    assert status == 302
    assert len(canary.requests) == 1
    seen = canary.requests[0]
    assert seen.method == "POST"
    assert seen.body == b'{"id": 1}'
    assert seen.headers["x-signature"] == "abc"
    assert seen.headers["host"] == f"127.0.0.1:{canary.port}"  # caller's Host is overridden


def test_post_returns_error_statuses(canary: Canary) -> None:
    status = post_safely(
        canary.url("/status?code=503"), body=b"", headers={}, timeout_s=3, allow_private=True
    )
    assert status == 503


def test_post_timeout(canary: Canary) -> None:
    with pytest.raises(FetchError, match=r"timed out after 0\.3 s"):
        post_safely(canary.url("/slow"), body=b"", headers={}, timeout_s=0.3, allow_private=True)


# --- bad URLs and network failures ---------------------------------------------------------------


def test_dns_failure() -> None:
    with pytest.raises(FetchError) as info:
        fetch_url("http://no-such-host.invalid/image.png")
    assert not isinstance(info.value, BlockedAddress)
    assert info.value.message.startswith("could not resolve host 'no-such-host.invalid'")


def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match=f"could not connect to 127.0.0.1:{port}"):
        fetch_url(f"http://127.0.0.1:{port}/", allow_private=True)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/a.png", "only http and https"),
        ("gopher://127.0.0.1:70/", "only http and https"),
        ("example.com/a.png", "only http and https"),
        ("http://user:secret@example.com/a.png", "user name or password"),
        ("http:///a.png", "no host"),
        ("http://example.com:99999/", "not a valid URL"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(FetchError, match=match):
        fetch_url(url)
    with pytest.raises(FetchError, match=match):
        validate_public_url(url, allow_private=True)


def test_validate_public_url_allows_private_when_asked() -> None:
    validate_public_url("http://localhost:1234/hook", allow_private=True)
