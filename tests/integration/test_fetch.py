"""The guarded download against real HTTP servers on 127.0.0.1 and 127.0.0.2."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import httpx
import pytest
import trustme
from tests.support.image_server import JPEG, PNG, ImageServer, serve_images

from stockroom.domain.errors import (
    BlockedAddress,
    FetchTimeout,
    ImageTooLarge,
    SourceClientError,
    SourceServerError,
    SourceUnreachable,
)
from stockroom.pipeline.address_policy import IPAddress
from stockroom.pipeline.fetch import AddressPolicy, Fetched, ImageFetcher, fetch_image

# 127.0.0.2 plays a public host; the socket guard must let tests reach it.
pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "127.0.0.2", "::1"])

LOCAL = AddressPolicy(allow_private=True)
PUBLIC_127_0_0_2 = AddressPolicy(
    allow_private=False, also_allow=[ipaddress.ip_network("127.0.0.2/32")]
)


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with serve_images("127.0.0.1") as running:
        yield running


@pytest.fixture(scope="module")
def public_server() -> Iterator[ImageServer]:
    with serve_images("127.0.0.2") as running:
        yield running


async def fetch(
    url: str,
    policy: AddressPolicy = LOCAL,
    *,
    max_bytes: int = 1_000_000,
    timeout: float = 5.0,
    max_redirects: int = 3,
) -> Fetched:
    return await fetch_image(
        url, policy, max_bytes=max_bytes, timeout=timeout, max_redirects=max_redirects
    )


async def test_downloads_an_image(server: ImageServer) -> None:
    fetched = await fetch(server.url("image.jpg"))
    assert fetched.data == JPEG
    assert fetched.content_type_header == "image/jpeg"
    assert fetched.final_url == server.url("image.jpg")


async def test_follows_redirects_and_reports_the_final_url(server: ImageServer) -> None:
    fetched = await fetch(server.url("chain/3"))
    assert fetched.data == JPEG
    assert fetched.final_url == server.url("chain/0")


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        # A pre-signed URL: its escapes are part of what was signed, so they travel as given.
        (
            "/target/a.jpg?X-Amz-Credential=AK%2F20261127%2Fus&X-Amz-Signature=ab%2Bc%3D",
            "/target/a.jpg?X-Amz-Credential=AK%2F20261127%2Fus&X-Amz-Signature=ab%2Bc%3D",
        ),
        ("/target/a%2Fb.jpg?q=a+b", "/target/a%2Fb.jpg?q=a+b"),
        ("/target/caf\u00e9 1.jpg?x=\u00e9", "/target/caf%C3%A9%201.jpg?x=%C3%A9"),
    ],
)
async def test_the_request_target_is_the_url_as_given_escaped_where_it_must_be(
    server: ImageServer, asked: str, sent: str
) -> None:
    fetched = await fetch(f"http://127.0.0.1:{server.port}{asked}")
    assert fetched.data.decode() == sent


async def test_a_relative_redirect_is_resolved_against_the_url_that_answered(
    server: ImageServer,
) -> None:
    fetched = await fetch(server.url("redirect?to=../target/b.jpg%3Fs%3D%252F"))
    assert fetched.data == b"/target/b.jpg?s=%2F"


async def test_too_many_redirects_is_a_client_error(server: ImageServer) -> None:
    with pytest.raises(SourceClientError, match="more than 3 redirects"):
        await fetch(server.url("chain/4"))


async def test_zero_redirects_allowed_means_none_followed(server: ImageServer) -> None:
    with pytest.raises(SourceClientError):
        await fetch(server.url("chain/1"), max_redirects=0)


async def test_404_is_a_permanent_client_error(server: ImageServer) -> None:
    with pytest.raises(SourceClientError) as caught:
        await fetch(server.url("missing.jpg"))
    assert caught.value.permanent


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_5xx_and_429_are_transient_server_errors(server: ImageServer, status: int) -> None:
    with pytest.raises(SourceServerError) as caught:
        await fetch(server.url(f"status/{status}"))
    assert not caught.value.permanent


async def test_declared_oversize_body_is_refused_before_reading(server: ImageServer) -> None:
    with pytest.raises(ImageTooLarge, match="declares"):
        await fetch(server.url("huge/2000000"), max_bytes=1_000_000)


async def test_undeclared_oversize_body_is_cut_at_the_limit(server: ImageServer) -> None:
    started = time.monotonic()
    with pytest.raises(ImageTooLarge, match="exceeded"):
        await fetch(server.url("unsized/50000000"), max_bytes=200_000)
    assert time.monotonic() - started < 3


async def test_body_exactly_at_the_limit_is_accepted(server: ImageServer) -> None:
    fetched = await fetch(server.url("image.png"), max_bytes=len(PNG))
    assert fetched.data == PNG


async def test_slow_headers_time_out(server: ImageServer) -> None:
    with pytest.raises(FetchTimeout):
        await fetch(server.url("slow/2"), timeout=0.3)


async def test_total_time_is_limited_even_when_every_read_is_quick(server: ImageServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        await fetch(server.url("drip/3"), timeout=0.5)
    assert time.monotonic() - started < 1.5


async def test_connection_refused_is_unreachable() -> None:
    with serve_images("127.0.0.1") as stopped:
        url = stopped.url("image.jpg")
    with pytest.raises(SourceUnreachable) as caught:
        await fetch(url)
    assert not caught.value.permanent


async def test_connection_reset_is_unreachable(server: ImageServer) -> None:
    with pytest.raises(SourceUnreachable):
        await fetch(server.url("reset"))


# -- address rules on the wire -----------------------------------------------------------
async def test_loopback_is_refused_without_private_networks(server: ImageServer) -> None:
    with pytest.raises(BlockedAddress):
        await fetch(server.url("image.jpg"), AddressPolicy(allow_private=False))


async def test_decimal_encoded_loopback_is_refused(server: ImageServer) -> None:
    with pytest.raises(BlockedAddress):
        await fetch(f"http://2130706433:{server.port}/image.jpg", AddressPolicy())


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f000001"])
async def test_numeric_loopback_works_when_private_networks_are_allowed(
    server: ImageServer, host: str
) -> None:
    fetched = await fetch(f"http://{host}:{server.port}/image.jpg", LOCAL)
    assert fetched.data == JPEG


@pytest.mark.parametrize("host", ["0", "127.0.0.1.", "1.2.3.4.5", "[::]", "[ff02::1]"])
async def test_unspecified_group_and_malformed_literals_are_blocked_even_when_local(
    host: str,
) -> None:
    with pytest.raises(BlockedAddress):
        await fetch(f"http://{host}:9/a.jpg", LOCAL)


async def test_allowed_server_is_fetched(public_server: ImageServer) -> None:
    fetched = await fetch(public_server.url("image.png"), PUBLIC_127_0_0_2)
    assert fetched.data == PNG


async def test_redirect_from_an_allowed_host_to_loopback_is_refused(
    server: ImageServer, public_server: ImageServer
) -> None:
    target = server.url("image.jpg")
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1"):
        await fetch(public_server.url(f"redirect?to={target}"), PUBLIC_127_0_0_2)


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/a.jpg",
        "http://172.16.0.1/a.jpg",
        "http://192.168.0.1/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.jpg",
        "http://[fc00::1]/a.jpg",
        "http://[::ffff:127.0.0.1]/a.jpg",
        "http://2130706433/a.jpg",
        "http://localhost/a.jpg",
        "file:///etc/passwd",
    ],
)
async def test_redirect_to_any_refused_address_is_blocked(
    public_server: ImageServer, target: str
) -> None:
    with pytest.raises(BlockedAddress):
        await fetch(public_server.url(f"redirect?to={target}"), PUBLIC_127_0_0_2)


def pinned(answers: dict[str, list[str]]) -> tuple[AddressPolicy, list[str]]:
    """A policy whose resolver answers from `answers` (popping one per lookup), logging calls."""
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        lookups.append(host)
        queue = answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        return [ipaddress.ip_address(address)]

    policy = AddressPolicy(
        allow_private=False,
        also_allow=[ipaddress.ip_network("127.0.0.2/32")],
        resolve=resolve,
    )
    return policy, lookups


async def test_connects_to_the_vetted_address_while_keeping_the_hostname(
    public_server: ImageServer,
) -> None:
    policy, lookups = pinned({"images.example": ["127.0.0.2"]})
    fetched = await fetch(f"http://images.example:{public_server.port}/host", policy)
    assert fetched.data == f"images.example:{public_server.port}".encode()
    assert lookups == ["images.example"]


async def test_dns_rebinding_to_loopback_is_refused_at_connect(
    public_server: ImageServer,
) -> None:
    """First answer public, every later one loopback: the connect itself re-vets."""
    policy, lookups = pinned({"rebind.example": ["127.0.0.2", "127.0.0.1"]})
    first = f"http://rebind.example:{public_server.port}/image.png"
    assert (await fetch(first, policy)).data == PNG
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1"):
        await fetch(first, policy)
    assert lookups == ["rebind.example", "rebind.example"]


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fc00::1", "fe80::1"]
)
async def test_hostname_resolving_to_a_refused_address_never_connects(address: str) -> None:
    policy, _ = pinned({"evil.example": [address]})
    with pytest.raises(BlockedAddress):
        await fetch("http://evil.example/a.jpg", policy)


# --- HTTPS: TLS on asyncio's streams, the certificate checked against the URL's hostname ---


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(ca: trustme.CA) -> Iterator[ImageServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("images.example").configure_cert(context)
    with serve_images("127.0.0.2", tls=context) as running:
        yield running


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def fetch_tls(url: str, policy: AddressPolicy, verify: ssl.SSLContext) -> Fetched:
    fetcher = ImageFetcher(policy, max_bytes=1_000_000, timeout=5.0, max_redirects=3, verify=verify)
    try:
        return await fetcher.fetch(url)
    finally:
        await fetcher.aclose()


async def test_an_https_download_connects_to_the_vetted_address_under_the_hostname(
    tls_server: ImageServer, ca: trustme.CA
) -> None:
    """The certificate names images.example only: it verifies because TLS checks the name."""
    policy, lookups = pinned({"images.example": ["127.0.0.2"]})
    url = f"https://images.example:{tls_server.port}/host"
    fetched = await fetch_tls(url, policy, trusting(ca))
    assert fetched.data == f"images.example:{tls_server.port}".encode()
    assert lookups == ["images.example"]


async def test_an_https_download_from_a_host_its_certificate_does_not_name_is_unreachable(
    tls_server: ImageServer, ca: trustme.CA
) -> None:
    policy, _ = pinned({"other.example": ["127.0.0.2"]})
    with pytest.raises(SourceUnreachable, match=r"(?i)hostname|certificate"):
        await fetch_tls(f"https://other.example:{tls_server.port}/host", policy, trusting(ca))


async def test_https_certificate_from_an_unknown_authority_is_unreachable(
    tls_server: ImageServer,
) -> None:
    policy, _ = pinned({"images.example": ["127.0.0.2"]})
    with pytest.raises(SourceUnreachable, match=r"(?i)certificate"):
        await fetch(f"https://images.example:{tls_server.port}/image.jpg", policy)


# --- one fetcher per worker process: connections kept alive between jobs ---


async def test_a_fetcher_reuses_its_connection_to_an_origin(server: ImageServer) -> None:
    fetcher = ImageFetcher(LOCAL, max_bytes=1_000_000, timeout=5.0, max_redirects=3)
    try:
        first = await fetcher.fetch(server.url("peer"))
        second = await fetcher.fetch(server.url("peer"))
        assert (await fetcher.fetch(server.url("image.jpg"))).data == JPEG
    finally:
        await fetcher.aclose()
    assert first.data == second.data  # the same client port: one connection for both


async def test_one_off_downloads_do_not_share_connections(server: ImageServer) -> None:
    first = await fetch(server.url("peer"))
    second = await fetch(server.url("peer"))
    assert first.data != second.data


async def test_a_kept_connection_never_carries_a_request_for_another_host(
    server: ImageServer, public_server: ImageServer
) -> None:
    """127.0.0.2 is vetted on its own connect: pooling is per origin."""
    fetcher = ImageFetcher(PUBLIC_127_0_0_2, max_bytes=1_000_000, timeout=5.0, max_redirects=3)
    try:
        assert (await fetcher.fetch(public_server.url("image.png"))).data == PNG
        with pytest.raises(BlockedAddress):
            await fetcher.fetch(server.url("image.jpg"))  # 127.0.0.1, refused by this policy
    finally:
        await fetcher.aclose()


async def test_a_body_compressed_against_our_wish_is_decoded(server: ImageServer) -> None:
    assert (await fetch(server.url("gzip/image.jpg"))).data == JPEG


async def test_a_stacked_gzip_bomb_is_too_large(server: ImageServer) -> None:
    with pytest.raises(ImageTooLarge):
        await fetch(server.url("bomb/64"), max_bytes=1_000_000)


_BOMB_PROBE = """
import asyncio, sys
from stockroom.domain.errors import ImageTooLarge
from stockroom.pipeline.fetch import AddressPolicy, fetch_image

def peak_kib() -> int:  # this process image's own high-water mark (ru_maxrss survives exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

async def main() -> None:
    try:
        await fetch_image(sys.argv[1], AddressPolicy(allow_private=True),
                          max_bytes=10_000_000, timeout=30, max_redirects=0)
    except ImageTooLarge:
        print("too_large")

before = peak_kib()
asyncio.run(main())
print((peak_kib() - before) // 1024)
"""


def test_a_bomb_never_holds_more_than_the_cap_in_memory(server: ImageServer) -> None:
    """256 MiB of zeros behind `Content-Encoding: gzip, gzip` (a few KB on the wire): the
    process's peak memory grows by about the 10 MB cap, not by what the bomb decodes to."""
    url = server.url("bomb/256")
    httpx.get(url, headers={"Accept-Encoding": "identity"})  # the server builds it once first

    probe = subprocess.run(
        [sys.executable, "-c", _BOMB_PROBE, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    outcome, grown_mib = probe.stdout.split()
    assert outcome == "too_large"
    assert int(grown_mib) < 64, f"peak RSS grew by {grown_mib} MiB"


async def test_no_cookie_travels_from_one_download_to_the_next(server: ImageServer) -> None:
    fetcher = ImageFetcher(LOCAL, max_bytes=1_000_000, timeout=5.0, max_redirects=3)
    try:
        await fetcher.fetch(server.url("set-cookie?value=user-a"))
        echoed = await fetcher.fetch(server.url("cookie"))
    finally:
        await fetcher.aclose()

    assert echoed.data == b""
