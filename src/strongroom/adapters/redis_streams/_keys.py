"""Where the Redis Streams event log keeps what, under ``STRONGROOM_STREAM_PREFIX``.

Names (topics, tenants, groups) are percent-encoded in keys, ``:`` included,
so two different names never share a key; the names Strongroom uses
(``payments.tokenized``, ``ten_…``, ``billing-1``) stay as they are.

=====================================  ==========  ===============================
key                                    type        holds
=====================================  ==========  ===============================
``topic:<topic>``                      hash        ``next`` offset, last ``at``
``topic-tenants:<topic>``              set         tenants with a stream there
``log:<topic>:<tenant>``               stream      records, entry id ``<offset+1>-0``
``ids:<topic>:<tenant>``               hash        record id → offset (idempotency)
``replayed:<topic>.dlq:<tenant>``      hash        dead-letter offset → replay time
``waiting:<topic>:<tenant>``           sorted set  dead-letter offset → record offset,
                                                   for letters not replayed
``due:<topic>:<tenant>:<group>``       sorted set  pending offset → visibility deadline
``tenant-topics:<tenant>``             set         topics where the tenant has a stream
``tenant-groups:<tenant>``             set         ``<topic>:<group>`` of its groups
``group-tenants``                      set         tenants that have consumer groups
=====================================  ==========  ===============================

Consumer groups are the streams' own (``XGROUP``), named as the gateway's.
"""

from __future__ import annotations

from urllib.parse import quote, unquote


def _name(name: str) -> str:
    return quote(name, safe="")


class KeySpace:
    """The key names of one deployment (one ``stream_prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def topic(self, topic: str) -> str:
        return f"{self.prefix}topic:{_name(topic)}"

    def topic_tenants(self, topic: str) -> str:
        return f"{self.prefix}topic-tenants:{_name(topic)}"

    def log(self, topic: str, tenant: str) -> str:
        return f"{self.prefix}log:{_name(topic)}:{_name(tenant)}"

    def ids(self, topic: str, tenant: str) -> str:
        return f"{self.prefix}ids:{_name(topic)}:{_name(tenant)}"

    def replayed(self, topic: str, tenant: str) -> str:
        return f"{self.prefix}replayed:{_name(topic)}:{_name(tenant)}"

    def waiting(self, topic: str, tenant: str) -> str:
        return f"{self.prefix}waiting:{_name(topic)}:{_name(tenant)}"

    def due(self, topic: str, tenant: str, group: str) -> str:
        return f"{self.prefix}due:{_name(topic)}:{_name(tenant)}:{_name(group)}"

    def tenant_topics(self, tenant: str) -> str:
        return f"{self.prefix}tenant-topics:{_name(tenant)}"

    def tenant_groups(self, tenant: str) -> str:
        return f"{self.prefix}tenant-groups:{_name(tenant)}"

    def group_tenants(self) -> str:
        return f"{self.prefix}group-tenants"

    def pair(self, topic: str, tenant: str) -> list[str]:
        """The keys an append to (topic, tenant) touches, in the order the scripts take them."""
        return [
            self.topic(topic),
            self.topic_tenants(topic),
            self.log(topic, tenant),
            self.ids(topic, tenant),
            self.tenant_topics(tenant),
        ]


def group_member(topic: str, group: str) -> str:
    """How a group is listed in its tenant's ``tenant-groups`` set."""
    return f"{_name(topic)}:{_name(group)}"


def parse_group_member(member: str) -> tuple[str, str]:
    """(topic, group) of a ``tenant-groups`` member."""
    topic, _, group = member.partition(":")
    return unquote(topic), unquote(group)
