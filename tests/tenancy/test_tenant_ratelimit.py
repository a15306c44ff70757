"""The per-tenant rate limit (``STRONGROOM_TENANT_RATELIMIT_RPS``/``_BURST``).

It applies on top of each key's own limit: a tenant's keys share one budget, so
adding keys does not add capacity, and one tenant running out does not slow
another down.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from tenancy_support import Harness

from strongroom.domain.access import Role
from support import bearer
from support_problems import assert_problem

MakeHarness = Callable[..., AbstractAsyncContextManager[Harness]]


async def test_a_tenants_keys_share_one_budget(make_harness: MakeHarness) -> None:
    async with make_harness(
        ratelimit_rps=0.01, ratelimit_burst=100, tenant_ratelimit_rps=0.01, tenant_ratelimit_burst=4
    ) as harness:
        busy = await harness.tenant()
        keys = [await harness.key(busy, Role.VIEWER) for _ in range(3)]
        calm = await harness.key(await harness.tenant(), Role.VIEWER)

        statuses = []
        for index in range(6):
            response = await harness.http.get(
                "/v1/usage", headers=bearer(keys[index % len(keys)].secret)
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert_problem(response, 429, "rate_limited")
                assert int(response.headers["retry-after"]) >= 1
        # Each key used at most twice, far under its own burst of 100: only the tenant
        # budget of 4 can refuse.
        assert statuses == [200, 200, 200, 200, 429, 429], statuses

        other = await harness.http.get("/v1/usage", headers=bearer(calm.secret))
        assert other.status_code == 200, other.text
