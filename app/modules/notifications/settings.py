"""The notifications module's own settings: ``QUARRY_NOTIFICATIONS_*``, or ``[notifications]``
in ``quarry.toml``."""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.kernel.module_settings import Alias

__all__ = ["NotificationsSettings"]

_Positive = msgspec.Meta(gt=0)


class NotificationsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where webhooks may point, and how their deliveries are sent and retried."""

    webhook_hosts: Annotated[tuple[str, ...], Alias("QUARRY_WEBHOOK_HOSTS")] = ("*",)
    """QUARRY_NOTIFICATIONS_WEBHOOK_HOSTS (or QUARRY_WEBHOOK_HOSTS): the hosts webhooks may
    post to, comma-separated: a host name (``hooks.slack.com``), a domain's hosts
    (``*.example.com``), ``*`` for any host, or a network (``10.0.0.0/8``, ``127.0.0.1/32``).
    A host is allowed when a name entry matches it, or when network entries cover every address
    it resolves to. Every address must also be public, unless a network entry covers it: private,
    loopback, link-local (the cloud metadata address 169.254.169.254), multicast and reserved
    addresses (and IPv6 ones standing for them: mapped, 6to4, NAT64) are reached only through a
    network entry. The default, ``*``, allows any host on
    public addresses."""
    timeout_s: Annotated[float, _Positive] = 10.0
    """QUARRY_NOTIFICATIONS_TIMEOUT_S: how long one attempt may take, connection to last byte."""
    max_response_bytes: Annotated[int, msgspec.Meta(ge=0)] = 65536
    """QUARRY_NOTIFICATIONS_MAX_RESPONSE_BYTES: most bytes of an answer read (the rest is
    dropped)."""
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    """QUARRY_NOTIFICATIONS_MAX_ATTEMPTS: attempts before a delivery is listed as failed."""
    retry_base_s: Annotated[float, _Positive] = 5.0
    """QUARRY_NOTIFICATIONS_RETRY_BASE_S: the wait after a first failed attempt; it doubles after
    each further one (with up to 25% jitter)."""
    retry_cap_s: Annotated[float, _Positive] = 3600.0
    """QUARRY_NOTIFICATIONS_RETRY_CAP_S: the longest wait between two attempts."""
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 16
    """QUARRY_NOTIFICATIONS_CONCURRENCY: deliveries sent at the same time by one process."""
    retention_s: Annotated[float, _Positive] = 30 * 86400.0
    """QUARRY_NOTIFICATIONS_RETENTION_S: delivered deliveries older than this are pruned."""
