"""Redis: partition tallies in, combined snapshots out; checkpoints; one atomic write per snapshot.

The keys are :class:`~stream.publish.redis_keys.RedisKeys` (documented in ``schemas/README.md``).
A window's snapshot is published once every partition has closed it: the tallies are summed,
the estimate computed, and the snapshot, regions, cells, history, announcement and alerts are
written in one MULTI/EXEC guarded by ``published_until`` (WATCH), so two workers racing to
publish write it once, and a reader never sees half a snapshot.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h3
import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from estimators.alerts import GapAlert
from estimators.engine import Engine
from estimators.estimate import Estimate
from estimators.regions import RegionSet
from estimators.tally import Tally, merge_tallies
from estimators.units import DAY_S, SECOND_MS
from stream.publish.flows import flows_history, period_flows
from stream.publish.redis_keys import RedisKeys, health_field
from stream.publish.snapshot import build_snapshot, gap_alerts
from stream.timefmt import iso_utc

log = logging.getLogger("defacto.publish")
HISTORY_FIGURES = ("present", "resident", "resident_lo", "resident_hi", "registered", "gap_ratio")
"""The figures kept per region in ``P:history`` (the dashboard's chart)."""

_SAVE_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], 'offset')
if (not cur) or tonumber(cur) <= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'offset', ARGV[1], 'data', ARGV[2])
  return 1
end
return 0
"""
_RAISE_FIELD = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""


@dataclass(frozen=True)
class PublishSettings:
    """Where and how snapshots go to Redis: key ``prefix``, how long history and tallies are
    kept, how many announcements and alert events the streams keep, and the gap alert
    threshold (a fraction of the registry)."""

    prefix: str = "defacto"
    history_s: int = 7 * DAY_S
    announcements: int = 10_000
    tally_ttl_s: int = 2 * DAY_S
    gap_threshold: float = 0.10
    alert_log: int = 10_000


class SnapshotPublisher:
    """Writes tallies and checkpoints, and publishes combined snapshots, for one worker.

    ``engine`` (no devices needed) turns merged tallies into estimates with the deployment's
    calibration; ``partitions`` is the pings topic's partition count (a window is published
    once all of them closed it); ``every_ms`` the window length (UTC ms); ``registry`` region id
    → registered people; ``on_publish(snapshot, delay_s)`` is called after each publish with
    the wall-clock delay behind the window's end.
    """

    def __init__(self, client: aioredis.Redis, engine: Engine, partitions: int, every_ms: int,
                 registry: dict[str, int] | None, settings: PublishSettings,
                 on_publish: Callable[[dict[str, Any], float], None] | None = None) -> None:
        self.redis = client
        self.keys = RedisKeys(settings.prefix)
        self.engine = engine
        self.partitions = partitions
        self.every_ms = every_ms
        self.registry = registry
        self.settings = settings
        self.resolutions = engine.cell_resolutions
        self.on_publish = on_publish or (lambda _snap, _delay: None)
        self._save = client.register_script(_SAVE_IF_NEWER)
        self._raise_field = client.register_script(_RAISE_FIELD)

    async def write_tallies(self, partition: int, tallies: list[Tally],
                            closed_until: int | None, last_accepted_ms: int | None = None) -> None:
        """Store a partition's tallies for closed windows; raise its closed and last-ping marks."""
        pipe = self.redis.pipeline(transaction=True)
        for t in tallies:
            k = self.keys.tally(t.at_ms)
            pipe.hset(k, str(partition), t.to_bytes())
            pipe.expire(k, self.settings.tally_ttl_s)
            pipe.zadd(self.keys.pending, {str(t.at_ms): t.at_ms})
        await pipe.execute()
        if closed_until is not None:
            await self._raise_field(keys=[self.keys.closed], args=[partition, closed_until])
        if last_accepted_ms is not None:
            await self._raise_field(keys=[self.keys.last_accepted],
                                     args=[partition, last_accepted_ms])

    async def save_checkpoint(self, partition: int, offset: int, blob: bytes) -> bool:
        """Store a partition checkpoint unless a newer one (higher offset) is already there."""
        return bool(await self._save(keys=[self.keys.checkpoint(partition)], args=[offset, blob]))

    async def load_checkpoint(self, partition: int) -> bytes | None:
        """The partition's latest checkpoint, if any."""
        return await self.redis.hget(self.keys.checkpoint(partition), "data")

    async def published_until(self) -> int | None:
        """End of the last published window (ms), if any."""
        v = await self.redis.get(self.keys.published_until)
        return int(v) if v is not None else None

    async def try_publish(self) -> list[int]:
        """Publish every window that all partitions have closed; returns the windows published."""
        closed = {int(k): int(v) for k, v in (await self.redis.hgetall(self.keys.closed)).items()}
        if any(p not in closed for p in range(self.partitions)):
            return []
        last = [int(v) for v in (await self.redis.hgetall(self.keys.last_accepted)).values()]
        if not last:
            return []
        # like the end of a replay: no window beyond the one holding the last accepted ping
        data_end = (max(last) // self.every_ms + 1) * self.every_ms
        ready_until = min(min(closed[p] for p in range(self.partitions)), data_end)
        done: list[int] = []
        ends = await self.redis.zrangebyscore(self.keys.pending, "-inf", ready_until)
        for at in sorted(int(e) for e in ends):
            if await self._publish_one(at):
                done.append(at)
        return done

    def _cells(self, est: Estimate) -> dict[int, dict[str, str]]:
        """Present population per H3 cell at each published resolution ("null": suppressed)."""
        out = {}
        finest = (self.engine.config.res, (est.cell_id, est.cell_present))
        for res, (ids, present) in [*est.coarse_cells.items(), finest]:
            out[res] = {h3.int_to_str(int(c)): "null" if np.isnan(v) else str(round(float(v)))
                        for c, v in zip(ids.tolist(), present.tolist(), strict=True)}
        return out

    async def _publish_one(self, at_ms: int) -> bool:
        """Publish the window ending at ``at_ms`` unless another worker already did (WATCH on
        ``published_until``); every key of the snapshot in one MULTI/EXEC."""
        pu_key = self.keys.published_until
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(pu_key)
                current = await pipe.get(pu_key)
                if current is not None and int(current) >= at_ms:
                    await pipe.unwatch()
                    await self.redis.zrem(self.keys.pending, str(at_ms))
                    return False
                blobs = await pipe.hgetall(self.keys.tally(at_ms))
                if not blobs:
                    return False
                tally = merge_tallies([Tally.from_bytes(b) for b in blobs.values()])
                est = self.engine.estimate_tally(tally)
                snap = self.snapshot(est)
                flows = self.flows(tally, est)
                published_at = time.time()
                snap["published_at"] = iso_utc(int(published_at * SECOND_MS))
                active = _open_alerts(await pipe.hgetall(self.keys.alerts_active))
                alerts = gap_alerts(active, snap, at_ms, self.settings.gap_threshold)
                pipe.multi()
                self._queue_snapshot(pipe, at_ms, snap, self._cells(est))
                pipe.delete(self.keys.flows)
                if flows:
                    pipe.hset(self.keys.flows, mapping={
                        field: json.dumps(doc, separators=(",", ":")) for field, doc in flows.items()})
                    history = flows_history(flows)
                    if history:
                        pipe.hset(self.keys.flows_history, mapping=history)
                self._queue_alerts(pipe, at_ms, *alerts)
                pipe.publish(self.keys.announce, snap["at"])
                pipe.set(pu_key, at_ms)
                pipe.zremrangebyscore(self.keys.pending, "-inf", at_ms)
                await pipe.execute()
            except WatchError:
                return False
        self.on_publish(snap, published_at - at_ms / SECOND_MS)
        return True

    def flows(self, tally: Tally, est: Estimate) -> dict[str, dict[str, Any]]:
        """The migration flows of a merged tally's published periods
        (:meth:`~estimators.migration.MigrationTally.published`: ``week``/``month`` open,
        ``week:closed``/``month:closed`` the latest closed, ``week:effective``/
        ``month:effective`` the latest settled, dated by effective night); empty without
        migration."""
        mig = self.engine.config.migration
        if tally.migration is None or mig is None:
            return {}
        k = self.engine.config.estimate.k_anonymity
        return {field: period_flows(p, est, self.engine.regions, k, mig)
                for field, p in tally.migration.published().items()}

    def _queue_snapshot(self, pipe: Any, at_ms: int, snap: dict[str, Any],
                        cells: dict[int, dict[str, str]]) -> None:
        """Queue the snapshot, its regions, cells, history entry and announcement."""
        pipe.set(self.keys.snapshot, json.dumps(snap, separators=(",", ":")))
        pipe.delete(self.keys.regions)
        pipe.hset(self.keys.regions, mapping={
            rid: json.dumps(fig, separators=(",", ":")) for rid, fig in snap["regions"].items()})
        for res in self.resolutions:
            values = cells.get(res, {})
            pipe.delete(self.keys.cells(res))
            if values:
                pipe.hset(self.keys.cells(res), mapping=values)
        compact = {"at": snap["at"], "regions": {
            rid: {k: fig[k] for k in HISTORY_FIGURES} for rid, fig in snap["regions"].items()}}
        pipe.zadd(self.keys.history, {json.dumps(compact, separators=(",", ":")): at_ms})
        pipe.zremrangebyscore(self.keys.history, "-inf", at_ms - self.settings.history_s * SECOND_MS)
        pipe.xadd(self.keys.snapshots, {"at": snap["at"], "at_ms": at_ms,
                                        "published_at": snap["published_at"]},
                  maxlen=self.settings.announcements, approximate=True)

    def _queue_alerts(self, pipe: Any, at_ms: int, still: dict[str, GapAlert],
                      opened: list[GapAlert], closed: list[GapAlert]) -> None:
        """Queue the open alerts (replacing the previous set) and the opened/closed events."""
        pipe.delete(self.keys.alerts_active)
        if still:
            pipe.hset(self.keys.alerts_active, mapping={
                rid: json.dumps(a.to_dict()) for rid, a in still.items()})
        for event, alerts in (("closed", closed), ("opened", opened)):
            for a in alerts:
                pipe.xadd(self.keys.alerts_log,
                          {"event": event, "at_ms": at_ms, "alert": json.dumps(a.to_dict())},
                          maxlen=self.settings.alert_log, approximate=True)

    def snapshot(self, est: Estimate) -> dict[str, Any]:
        """The snapshot JSON object of the estimate from a (merged) tally."""
        cfg = self.engine.config.estimate
        return build_snapshot(est, self.engine.regions, self.engine.config.res, self.registry,
                              {"horizon_s": cfg.horizon_ms // SECOND_MS, "k": cfg.k_anonymity,
                               "gap_threshold": self.settings.gap_threshold,
                               "cell_resolutions": list(self.resolutions)})

    async def publish_geometry(self, regions: RegionSet) -> None:
        """Store the region outlines (GeoJSON lines, 5 decimals) for the dashboard's map."""
        features = [{"type": "Feature", "id": r.id,
                     "properties": {"name": r.name, "parent": r.parent},
                     "geometry": {"type": "MultiLineString", "coordinates": [
                         np.round(ring, 5).tolist() for ring in r.rings]}}
                    for r in regions.regions]
        await self.redis.set(self.keys.geometry, json.dumps(
            {"type": "FeatureCollection", "features": features}, separators=(",", ":")))

    async def forget_health(self, partition: int) -> None:
        """Drop a partition's health fields (it was revoked; its next owner writes them)."""
        await self.redis.hdel(self.keys.health, health_field("lag", partition),
                              health_field("seen", partition))

    async def write_health(self, lags: dict[int, int], seen: dict[int, float],
                           counts: dict[str, int]) -> None:
        """Record partitions' lag and last batch time, and add this worker's ping counts."""
        pipe = self.redis.pipeline(transaction=True)
        fields = {health_field("lag", p): n for p, n in lags.items()}
        fields.update({health_field("seen", p): round(t, 3) for p, t in seen.items()})
        if fields:
            pipe.hset(self.keys.health, mapping=fields)
        for name, n in counts.items():
            if n:
                pipe.hincrby(self.keys.counts, name, n)
        await pipe.execute()

    async def latest_flows(self) -> dict[str, dict[str, Any]]:
        """The migration flows published with the latest snapshot (see :meth:`flows`)."""
        raw = await self.redis.hgetall(self.keys.flows)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def latest(self) -> dict[str, Any] | None:
        """The latest published snapshot, if any."""
        body = await self.redis.get(self.keys.snapshot)
        return json.loads(body) if body else None


def _open_alerts(raw: dict[bytes, bytes]) -> dict[str, GapAlert]:
    """The open alerts stored in Redis; an entry this version cannot read (another version's
    fields, a hand edit) is logged and dropped rather than stopping every publish."""
    known = set(GapAlert.__dataclass_fields__)
    out: dict[str, GapAlert] = {}
    for rid, value in raw.items():
        region = rid.decode(errors="replace")
        try:
            fields = json.loads(value)
            out[region] = GapAlert(**{k: v for k, v in fields.items() if k in known})
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("dropping unreadable open alert of region %s (%s): %r", region, exc,
                        value[:200])
    return out


__all__ = ["PublishSettings", "RedisError", "SnapshotPublisher"]
