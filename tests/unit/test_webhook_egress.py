"""Where webhooks may post: the allow-list of ``QUARRY_WEBHOOK_HOSTS`` and the address rules."""

from __future__ import annotations

import pytest

from app.kernel.settings import ConfigError
from app.modules.notifications.egress import Egress
from contracts.common import InvalidInput


@pytest.mark.parametrize(
    ("entries", "url"),
    [
        (("*",), "https://1.1.1.1/hook"),
        (("1.1.1.1",), "http://1.1.1.1:8080/hook"),
        (("127.0.0.0/8",), "http://127.0.0.2/hook"),
        (("127.0.0.1/32",), "http://localhost/hook"),  # a name is fine once its address is
        (("10.0.0.0/8",), "http://10.1.2.3/"),
        (("*",), "http://[64:ff9b::101:101]/"),  # NAT64 for 1.1.1.1
        (("169.254.169.254/32",), "http://169.254.169.254/"),  # only when said in so many words
    ],
)
async def test_allowed(entries: tuple[str, ...], url: str) -> None:
    target = await Egress(entries).check(url)
    assert target.host in url


@pytest.mark.parametrize(
    ("entries", "url", "why"),
    [
        (("*",), "http://127.0.0.1/", "loopback"),
        (("*",), "http://[::1]/", "loopback"),
        (("*",), "http://localhost/", "loopback"),
        (("*",), "http://192.168.1.1/", "private"),
        (("*",), "http://[fd00::1]/", "private"),
        (("*",), "http://169.254.169.254/", "link-local"),
        (("*",), "http://[::ffff:10.0.0.1]/", "private"),
        (("*",), "http://0.0.0.0/", "unspecified"),
        (("*",), "http://224.0.0.1/", "multicast"),
        (("*",), "http://[ff02::1]/", "multicast"),
        (("*",), "http://[64:ff9b::a00:1]/", "private"),  # NAT64 for 10.0.0.1
        (("*",), "http://[2002:a9fe:a9fe::]/", "link-local"),  # 6to4 for 169.254.169.254
        (("*",), "http://100.64.0.1/", "reserved"),  # carrier-grade NAT
        (("hooks.example.com",), "http://1.1.1.1/", "not allowed by QUARRY_WEBHOOK_HOSTS"),
        (("*.example.com",), "http://example.org/", "not allowed by QUARRY_WEBHOOK_HOSTS"),
        (("localhost",), "http://localhost/", "loopback"),  # a name never unlocks an address
        (("10.0.0.0/8",), "http://host.invalid/", "does not resolve"),
        (("10.0.0.0/8",), "http://localhost/", "not allowed by QUARRY_WEBHOOK_HOSTS"),
        (("*",), "javascript:alert(1)", "only http and https"),
        (("*",), "http://a b/", "spaces or control characters"),
        (("*",), "http://example.com:99999/", "not a valid URL"),
    ],
)
async def test_refused(entries: tuple[str, ...], url: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        await Egress(entries).check(url)


def test_a_bad_network_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="QUARRY_WEBHOOK_HOSTS"):
        Egress(("10.0.0.0/33",))
