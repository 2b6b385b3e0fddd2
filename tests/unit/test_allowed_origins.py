"""STOCKROOM_FETCH_ALLOWED_ORIGINS: the download may reach exactly those (address, port)
pairs although they are private (`serve --demo` fetches its photo from itself); every other
private address, the same host's other ports included, stays refused."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from stockroom.config import Settings
from stockroom.domain.errors import BlockedAddress
from stockroom.pipeline.address_policy import AddressPolicy, IPAddress, check_url

DEMO = "http://127.0.0.1:8000"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def allowing(*origins: str, resolve_to: Sequence[str] | None = None) -> AddressPolicy:
    """The policy bootstrap builds from these origins; `resolve_to` answers every name."""
    endpoints = settings(fetch_allowed_origins=",".join(origins)).fetch_allowed_endpoints
    if resolve_to is None:
        return AddressPolicy(allowed_endpoints=endpoints)

    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        return [ipaddress.ip_address(address) for address in resolve_to]

    return AddressPolicy(allowed_endpoints=endpoints, resolve=resolve)


async def test_the_allowed_origin_is_fetchable() -> None:
    addresses = await check_url(f"{DEMO}/media/demo/colorful-cups.jpg", allowing(DEMO))

    assert addresses == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8001/media/demo/colorful-cups.jpg",  # same host, another port
        "http://127.0.0.1/a.jpg",  # ... the default one
        "https://127.0.0.1/a.jpg",  # ... 443
        "http://127.0.0.2:8000/a.jpg",  # another loopback address, same port
        "http://[::1]:8000/a.jpg",  # the IPv6 loopback is another address
        "http://[::ffff:127.0.0.1]:8000/a.jpg",  # so is a mapped spelling of it
        "http://10.1.2.3:8000/a.jpg",
        "http://192.168.1.10:8000/a.jpg",
        "http://169.254.169.254:8000/latest/meta-data/",
        "http://0.0.0.0:8000/a.jpg",
    ],
)
async def test_every_other_private_address_stays_refused(url: str) -> None:
    with pytest.raises(BlockedAddress):
        await check_url(url, allowing(DEMO))


async def test_a_name_is_vetted_by_what_it_resolves_to() -> None:
    only_the_origin = allowing(DEMO, resolve_to=["127.0.0.1"])
    also_another = allowing(DEMO, resolve_to=["127.0.0.1", "10.0.0.5"])

    await check_url("http://demo.test:8000/a.jpg", only_the_origin)
    with pytest.raises(BlockedAddress, match=r"10\.0\.0\.5"):
        await check_url("http://demo.test:8000/a.jpg", also_another)
    with pytest.raises(BlockedAddress):
        await check_url("http://demo.test:9000/a.jpg", only_the_origin)


async def test_public_addresses_are_still_allowed_and_nothing_private_by_default() -> None:
    await check_url("http://93.184.216.34:8000/a.jpg", allowing(DEMO))
    with pytest.raises(BlockedAddress):
        await check_url(f"{DEMO}/a.jpg", allowing())


def test_origins_are_read_comma_separated_and_spelled_out() -> None:
    parsed = settings(
        fetch_allowed_origins=" http://127.0.0.1:8000, https://[::1] ,http://10.0.0.7,"
    )

    assert parsed.fetch_allowed_origins == (
        "http://127.0.0.1:8000",
        "https://[::1]:443",
        "http://10.0.0.7:80",
    )
    assert parsed.fetch_allowed_endpoints == {
        (ipaddress.ip_address("127.0.0.1"), 8000),
        (ipaddress.ip_address("::1"), 443),
        (ipaddress.ip_address("10.0.0.7"), 80),
    }
    assert settings().fetch_allowed_origins == ()


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKROOM_FETCH_ALLOWED_ORIGINS", "http://127.0.0.1:8000,http://[::1]:8000")

    assert settings().fetch_allowed_origins == ("http://127.0.0.1:8000", "http://[::1]:8000")


@pytest.mark.parametrize(
    ("origin", "reason"),
    [
        ("http://localhost:8000", "not a name"),
        ("127.0.0.1:8000", "origin"),
        ("ftp://127.0.0.1:21", "origin"),
        ("http://127.0.0.1:8000/media", "more than"),
        ("http://127.0.0.1:8000?x=1", "more than"),
        ("http://user@127.0.0.1:8000", "more than"),
        ("http://127.0.0.1:0", "origin"),
        ("http://127.0.0.1:70000", "not an origin"),
        ("http://0.0.0.0:8000", "unicast"),
        ("http://[ff02::1]:8000", "unicast"),
    ],
)
def test_anything_but_an_ip_origin_is_refused_at_start(origin: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        settings(fetch_allowed_origins=origin)
