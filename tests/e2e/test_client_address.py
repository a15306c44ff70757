"""Which address a real ``strongroom serve`` counts a client under, behind a proxy or not.

Without ``STRONGROOM_TRUSTED_PROXIES`` no forwarding header is believed, not even
from loopback: the per-IP limit on failed authentication cannot be escaped by
naming another address. With it, X-Forwarded-For from a trusted proxy names the
client, so clients behind one proxy are counted apart.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support import TOKENIZED_URL, GatewayProcess

pytestmark = pytest.mark.slow

WRONG = {"Authorization": "Bearer wrong-key-0000000000"}
LIMITED_ENV = {"STRONGROOM_IP_RATELIMIT_BURST": "2", "STRONGROOM_IP_RATELIMIT_RPS": "0.1"}


def _statuses(gateway: GatewayProcess, forwarded_for: str | None) -> list[int]:
    headers = dict(WRONG)
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    with gateway.client() as client:
        return [client.get(TOKENIZED_URL, headers=headers).status_code for _ in range(3)]


def test_forwarded_for_is_ignored_without_trusted_proxies(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(env=LIMITED_ENV)

    assert _statuses(gateway, None) == [401, 401, 429]
    # Another claimed address is still the same loopback client: still limited.
    assert _statuses(gateway, "203.0.113.7") == [429, 429, 429]


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(env={**LIMITED_ENV, "STRONGROOM_TRUSTED_PROXIES": "127.0.0.1"})

    assert _statuses(gateway, "203.0.113.7") == [401, 401, 429]
    assert _statuses(gateway, "203.0.113.8") == [401, 401, 429]
