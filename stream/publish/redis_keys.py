"""The Redis key layout of one deployment: the contract between workers, dashboards and demo.

Every key lives under a prefix ``P`` (``--prefix``, default ``defacto``); ``schemas/README.md``
("Redis keys") documents each one. Workers write them (:mod:`stream.publish.redis_publisher`);
dashboards only read them (:mod:`stream.web.dashboard`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class RedisKeys:
    """The keys under ``prefix``."""

    prefix: str = "defacto"

    def key(self, *parts: object) -> str:
        """``prefix:part:part...``."""
        return ":".join([self.prefix, *map(str, parts)])

    def tally(self, at_ms: int) -> str:
        """Hash partition → tally blob of the window ending at ``at_ms`` (deleted when the
        window is published)."""
        return self.key("tally", at_ms)

    @property
    def deployment(self) -> str:
        """Hash ``epoch`` (a random id of this generation of the keys), ``fingerprint`` (JSON
        of the settings every worker must share), ``digest``, ``since``: written once by the
        first worker; a worker that finds it gone or changed knows Redis lost its data."""
        return self.key("deployment")

    @property
    def first_window(self) -> str:
        """Hash partition → end of the first window that partition tallied (ms): a published
        window must hold the tally of every partition whose first window is not after it."""
        return self.key("first_window")

    @property
    def closed(self) -> str:
        """Hash partition → end of the last window that partition closed (ms)."""
        return self.key("closed")

    @property
    def last_accepted(self) -> str:
        """Hash partition → event time of its latest accepted ping (ms)."""
        return self.key("last_accepted")

    @property
    def pending(self) -> str:
        """Sorted set of window ends with at least one tally."""
        return self.key("pending")

    @property
    def published_until(self) -> str:
        """The end of the last published window (ms)."""
        return self.key("published_until")

    @property
    def snapshot(self) -> str:
        """The latest snapshot (JSON, ``schemas/snapshot.schema.json``)."""
        return self.key("snapshot")

    @property
    def regions(self) -> str:
        """Hash region id → JSON of its figures in the latest snapshot."""
        return self.key("regions")

    def cells(self, res: int | str) -> str:
        """Hash H3 cell → present population at ``res`` (``null``: suppressed)."""
        return self.key("cells", res)

    @property
    def history(self) -> str:
        """Sorted set (score at_ms) of compact per-region snapshots."""
        return self.key("history")

    @property
    def snapshots(self) -> str:
        """Stream of snapshot announcements (at, at_ms, published_at)."""
        return self.key("snapshots")

    @property
    def announce(self) -> str:
        """Pub/sub channel of snapshot times."""
        return self.key("announce")

    def checkpoint(self, partition: int) -> str:
        """Hash {offset, data, topic_id, fingerprint}: the partition's resumable state, the id
        of the topic it was read from and the settings it was taken under."""
        return self.key("checkpoint", partition)

    @property
    def alerts_active(self) -> str:
        """Hash region id → JSON of its open gap alert."""
        return self.key("alerts", "active")

    @property
    def alerts_log(self) -> str:
        """Stream of gap alert opened/closed events."""
        return self.key("alerts", "log")

    @property
    def flows(self) -> str:
        """Hash ``week``, ``month`` (the open periods), ``week:closed``, ``month:closed`` (the
        last closed ones), ``week:effective``, ``month:effective`` (the last settled ones, dated
        by effective night) → JSON of that period's migration flows (``flows.schema.json``)."""
        return self.key("flows")

    @property
    def flows_history(self) -> str:
        """Hash ``<kind>:<dating>:<period>`` (e.g. ``week:detected:2026-W10``) → JSON of a final
        period's rural balance (``period``, ``kind``, ``dating``, ``first_night``, ``rural``):
        every closed and every settled period, about 130 small fields a year."""
        return self.key("flows:history")

    @property
    def periods_epoch(self) -> str:
        """String: the deployment epoch (``P:deployment``'s) under which ``P:flows`` and
        ``P:foreign`` were last written; a final period document there is kept by later
        snapshots only under that same epoch."""
        return self.key("periods", "epoch")

    @property
    def foreign(self) -> str:
        """Hash ``week``, ``month`` (the open periods), ``week:closed``, ``month:closed`` (the
        latest closed), ``week:settled``, ``month:settled`` (the latest settled) → JSON of that
        period's foreign-SIM figures (``flows.schema.json``, ``topic: "foreign"``); empty with
        foreign stays off."""
        return self.key("foreign")

    @property
    def geometry(self) -> str:
        """GeoJSON FeatureCollection of the region outlines."""
        return self.key("geometry")

    @property
    def health(self) -> str:
        """Hash ``lag:<partition>`` and ``seen:<partition>`` (Unix s of its latest batch)."""
        return self.key("health")

    @property
    def counts(self) -> str:
        """Hash of ping counts by outcome and ``rejected:<reason>``."""
        return self.key("counts")


def health_field(kind: str, partition: int) -> str:
    """A field of the health hash: ``lag:<partition>`` or ``seen:<partition>``."""
    return f"{kind}:{partition}"


def parse_health_field(field: str) -> tuple[str, int] | None:
    """``(kind, partition)`` of a health field, None for anything else."""
    kind, _, p = field.partition(":")
    return (kind, int(p)) if kind in ("lag", "seen") and p.isascii() and p.isdigit() else None


REJECTED_PREFIX = "rejected:"
"""Counts fields ``rejected:<reason>`` hold rejects by reason; the others are outcomes."""


def redact_url(url: str) -> str:
    """A Redis URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{parts.username + ':' if parts.username else ':'}***@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
