"""Which addresses a fetched or called-back URL may reach, with resolvers injected."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

import pytest

from stockroom.domain.errors import BlockedAddress, SourceUnreachable
from stockroom.pipeline.address_policy import (
    AddressPolicy,
    IPAddress,
    check_url,
    is_public,
    system_resolver,
)

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback /8"),
    ("10.0.0.1", "private 10/8"),
    ("172.16.0.1", "private 172.16/12"),
    ("172.31.255.255", "private 172.16/12 top"),
    ("192.168.1.1", "private 192.168/16"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast SSDP"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.10", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("::1", "IPv6 loopback"),
    ("::", "IPv6 unspecified"),
    ("fc00::1", "unique local fc00::/7"),
    ("fd12:3456::1", "unique local fd"),
    ("fe80::1", "IPv6 link-local"),
    ("fec0::1", "IPv6 site-local"),
    ("ff02::1", "IPv6 multicast"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("64:ff9b::a00:1", "NAT64 of 10.0.0.1"),
    ("2002:7f00:1::", "6to4 of 127.0.0.1"),
    ("2001:db8::1", "IPv6 documentation"),
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("address", "kind"), REFUSED, ids=[kind for _, kind in REFUSED])
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not is_public(ip)
    assert not AddressPolicy(allow_private=False).permits(ip)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy(allow_private=False).permits(ipaddress.ip_address(address))


def test_allow_private_permits_local_networks_but_not_group_or_any_addresses() -> None:
    policy = AddressPolicy(allow_private=True)
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "::1", "fd00::1"):
        assert policy.permits(ipaddress.ip_address(address))
    for address in ("0.0.0.0", "224.0.0.1", "::", "ff02::1"):
        assert not policy.permits(ipaddress.ip_address(address))


def test_also_allow_treats_one_network_as_public_and_no_other() -> None:
    policy = AddressPolicy(also_allow=[ipaddress.ip_network("127.0.0.2/32")])
    assert policy.permits(ipaddress.ip_address("127.0.0.2"))
    assert not policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert not policy.permits(ipaddress.ip_address("::1"))


def resolving_to(*addresses: str) -> AddressPolicy:
    """A policy whose resolver answers every host with `addresses`."""

    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        return [ipaddress.ip_address(address) for address in addresses]

    return AddressPolicy(allow_private=False, resolve=resolve)


@pytest.mark.parametrize(("address", "kind"), REFUSED, ids=[kind for _, kind in REFUSED])
async def test_hostnames_resolving_to_refused_addresses_are_blocked(
    address: str, kind: str
) -> None:
    with pytest.raises(BlockedAddress):
        await check_url("https://images.example.com/a.jpg", resolving_to(address))


async def test_one_private_answer_among_public_ones_blocks_the_host() -> None:
    policy = resolving_to("93.184.216.34", "10.0.0.5")
    with pytest.raises(BlockedAddress, match=r"10\.0\.0\.5"):
        await check_url("http://images.example.com/", policy)


async def test_public_hostname_passes_and_returns_its_addresses() -> None:
    policy = resolving_to("93.184.216.34", "2606:4700:4700::1111")
    addresses = await check_url("https://images.example.com/", policy)
    assert [str(ip) for ip in addresses] == ["93.184.216.34", "2606:4700:4700::1111"]


async def test_resolver_is_asked_for_the_url_host_and_port() -> None:
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        asked.append((host, port))
        return [ipaddress.ip_address("93.184.216.34")]

    await check_url("https://Images.Example.com/x", AddressPolicy(resolve=resolve))
    await check_url("http://images.example.com:8080/x", AddressPolicy(resolve=resolve))
    assert asked == [("images.example.com", 443), ("images.example.com", 8080)]


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0x7f000001/",  # hexadecimal
        "http://017700000001/",  # octal
        "http://127.1/",  # short dotted form
        "http://0/",  # 0.0.0.0
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.0.1/",
        "http://localhost/",
    ],
)
async def test_literal_and_encoded_private_addresses_are_blocked(url: str) -> None:
    """The real resolver: numeric forms are decoded like a browser or curl would."""
    with pytest.raises(BlockedAddress):
        await check_url(url, AddressPolicy(allow_private=False))


async def test_decimal_loopback_is_allowed_only_with_private_networks() -> None:
    addresses = await check_url("http://2130706433/", AddressPolicy(allow_private=True))
    assert [str(ip) for ip in addresses] == ["127.0.0.1"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "gopher://example.com/",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "http:///no-host",
        "//example.com/a.jpg",
        "http://user:secret@example.com/a.jpg",
    ],
)
async def test_only_http_and_https_urls_with_a_host_are_allowed(url: str) -> None:
    with pytest.raises(BlockedAddress):
        await check_url(url, resolving_to("93.184.216.34"))


async def test_unresolvable_host_is_unreachable_not_blocked() -> None:
    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        return []

    with pytest.raises(SourceUnreachable):
        await check_url("http://nowhere.example/", AddressPolicy(resolve=resolve))


@pytest.mark.parametrize("host", ["93.184.216.34", "127.0.0.1", "2606:2800:220:1::", "::1"])
async def test_an_ip_literal_is_its_own_answer_without_the_os_resolver(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_lookup(*args: object, **kwargs: object) -> object:
        raise AssertionError("getaddrinfo was called for an IP literal")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_lookup)
    assert await system_resolver(host, 80) == [ipaddress.ip_address(host)]


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f000001", "fe80::1%lo"])
async def test_encoded_and_scoped_forms_still_go_to_the_os_resolver(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    async def lookup(name: str, port: int, **kwargs: object) -> list[object]:
        asked.append(name)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", lookup)
    assert await system_resolver(host, 80) == [ipaddress.ip_address("127.0.0.1")]
    assert asked == [host]
