"""Redis: partition tallies in, combined snapshots out; checkpoints; one atomic write per snapshot.

The keys are :class:`~stream.publish.redis_keys.RedisKeys` (documented in ``schemas/README.md``).
A window's snapshot is published once every partition has closed it: the tallies are summed,
the estimate computed, and the snapshot, regions, cells, history, migration flows, foreign-SIM
figures, announcement and alerts are written in one MULTI/EXEC guarded by ``published_until``
(WATCH), so two workers racing to publish write it once, and a reader never sees half a
snapshot.

Shared state is checked, never assumed:

- **Epoch.** The first worker writes ``P:deployment`` (a random ``epoch`` and the deployment's
  :class:`~stream.estimate.fingerprint.Fingerprint`); every write checks the epoch in the same
  atomic step (Lua or WATCH) and raises :class:`RedisStateLost` when it is gone or another, i.e.
  when Redis lost its data (FLUSHDB, a restart without persistence). The worker then rewrites
  what it holds (:mod:`stream.worker.runtime`).
- **Settings.** A worker whose fingerprint differs from the pinned one is refused
  (:class:`DeploymentMismatchError`, naming the difference), so ``--k``, the calibration and the
  registry are the deployment's, not those of whichever worker publishes; each tally carries the
  fingerprint of its settings and a window whose tallies differ is not published.
- **Completeness.** A window is published only when its tally hash holds every partition that
  has tallied since before it (``P:first_window``); a window one of whose tallies is gone
  although the partition closed it can never be published exactly and is skipped, loudly.
- **Eviction.** :func:`eviction_problem` reads Redis's ``maxmemory-policy``: a policy that may
  drop keys is refused at start.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError, WatchError

from estimators.alerts import GapAlert
from estimators.engine import Engine
from estimators.estimate import Estimate
from estimators.regions import RegionSet
from estimators.tally import Tally, merge_tallies
from estimators.units import DAY_S, SECOND_MS
from estimators.warmup import WarmUp
from stream.estimate.checkpoint import EncodedCheckpoint
from stream.estimate.fingerprint import Fingerprint, describe_difference
from stream.publish.flows import flows_history, period_flows
from stream.publish.foreign import add_foreign_line, published_foreign
from stream.publish.redis_keys import RedisKeys, health_field
from stream.publish.snapshot import (
    build_snapshot,
    cell_ids,
    compact_json,
    counts_or_null,
    gap_alerts,
)
from stream.timefmt import iso_utc

log = logging.getLogger("defacto.publish")
HISTORY_FIGURES = ("present", "resident", "resident_lo", "resident_hi", "registered", "gap_ratio")
"""The figures kept per region in ``P:history`` (the dashboard's chart)."""

_EPOCH_OK = "if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return -1 end\n"
"""Lua prologue of every write: KEYS[1] is ``P:deployment``, ARGV[1] the epoch this worker
joined; -1 means Redis no longer holds that generation of the keys."""

CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'fingerprint', ARGV[2], 'digest', ARGV[3],
             'since', ARGV[4])
end
return redis.call('HMGET', KEYS[1], 'epoch', 'fingerprint', 'digest', 'since')
"""
"""Create ``P:deployment`` unless it exists; return its epoch, fingerprint, digest and since."""

_SAVE_IF_NEWER = _EPOCH_OK + """
-- ARGV: epoch, offset, blob, topic_id, fingerprint, base id, '1' for a delta
if ARGV[7] == '1' and redis.call('HGET', KEYS[2], 'base_id') ~= ARGV[6] then return -2 end
local cur = redis.call('HGET', KEYS[2], 'offset')
if (not cur) or tonumber(cur) <= tonumber(ARGV[2]) then
  if ARGV[7] == '1' then
    redis.call('HSET', KEYS[2], 'offset', ARGV[2], 'delta', ARGV[3], 'topic_id', ARGV[4],
               'fingerprint', ARGV[5])
  else
    redis.call('HSET', KEYS[2], 'offset', ARGV[2], 'data', ARGV[3], 'topic_id', ARGV[4],
               'fingerprint', ARGV[5], 'base_id', ARGV[6])
    redis.call('HDEL', KEYS[2], 'delta')
  end
  return 1
end
return 0
"""
"""Store a checkpoint unless a newer one (higher offset) is there: a base replaces the stored
base and drops its delta; a delta (cumulative since its base) is stored only beside its own
base (-2: the stored base is another one, so the writer's next checkpoint must be a base)."""
_WRITE_TALLIES = _EPOCH_OK + """
-- KEYS: deployment, published_until, pending, closed, last_accepted, first_window, tally keys
-- ARGV: epoch, partition, closed_until, last_accepted, first_window ('' = none), at/blob pairs
local published = tonumber(redis.call('GET', KEYS[2]) or '-1')
local written = 0
for i = 1, (#ARGV - 5) / 2 do
  local at = ARGV[4 + 2 * i]
  if tonumber(at) > published then
    redis.call('HSET', KEYS[6 + i], ARGV[2], ARGV[5 + 2 * i])
    redis.call('ZADD', KEYS[3], at, at)
    written = written + 1
  end
end
local function raise(key, value)
  if value == '' then return end
  local cur = redis.call('HGET', key, ARGV[2])
  if (not cur) or tonumber(cur) < tonumber(value) then redis.call('HSET', key, ARGV[2], value) end
end
raise(KEYS[4], ARGV[3])
raise(KEYS[5], ARGV[4])
if ARGV[5] ~= '' then
  local cur = redis.call('HGET', KEYS[6], ARGV[2])
  if (not cur) or tonumber(cur) > tonumber(ARGV[5]) then redis.call('HSET', KEYS[6], ARGV[2], ARGV[5]) end
end
return written
"""
_WRITE_HEALTH = _EPOCH_OK + """
-- KEYS: deployment, health, counts; ARGV: epoch, n health fields, field/value..., name/n...
local n = tonumber(ARGV[2])
for i = 1, n do redis.call('HSET', KEYS[2], ARGV[1 + 2 * i], ARGV[2 + 2 * i]) end
for i = 3 + 2 * n, #ARGV, 2 do redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 1
"""
_SET = _EPOCH_OK + """
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

PUBLISHED, ALREADY, SKIPPED, REFUSED = "published", "already", "skipped", "refused"
"""What :meth:`SnapshotPublisher.try_publish` did with a window."""


class RedisStateLost(Exception):  # noqa: N818 - a state, like ConnectionLost; not an error class
    """Redis no longer holds the keys this worker joined (``P:deployment`` gone or another epoch):
    FLUSHDB, a restart without persistence, eviction, or a hand-deleted key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Redis lost defacto's data: {key} is gone or was rewritten since this "
                         "worker joined (FLUSHDB, a restart of Redis without persistence, "
                         "eviction, or a deleted key)")


class DeploymentMismatchError(ValueError):
    """This worker's settings differ from those pinned for the deployment in Redis."""


@dataclass(frozen=True)
class Deployment:
    """The ``P:deployment`` record: ``epoch``, pinned ``fingerprint`` (None: not recorded),
    ``since`` (ISO time it was pinned) and whether this call ``created`` it."""

    epoch: str
    fingerprint: Fingerprint | None
    since: str
    created: bool


def _text(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


def deployment_from_claim(reply: Sequence[Any], token: str, mine: Fingerprint | None,
                          key: str) -> Deployment:
    """Read the reply of :data:`CLAIM_SCRIPT` and check it against this worker's fingerprint.

    Raises :class:`DeploymentMismatchError` naming each setting that differs, what the operator
    can do about it, and when the record was pinned.
    """
    epoch, theirs_json, _digest, since = (_text(v) for v in reply)
    theirs = Fingerprint.from_json(theirs_json) if theirs_json else None
    if mine is not None and theirs is not None and theirs != mine:
        diff = describe_difference(mine, theirs, "here", "in the deployment")
        tally_diff = mine.tally() != theirs.tally()
        how = ("these change what tallies and checkpoints mean: run the new settings as a new "
               "deployment (new --prefix and --group; README, Upgrades and changes)" if tally_diff
               else f"to change them, stop every worker, delete the key (redis-cli DEL {key}) "
                    "and start all workers with the new settings")
        raise DeploymentMismatchError(
            f"this worker's settings differ from the deployment's (Redis key {key}, pinned "
            f"{since or 'earlier'} by the first worker): {diff}. Every worker must run with the "
            f"same files and options; {how}")
    return Deployment(epoch, theirs, since, created=epoch == token)


def eviction_problem(info: dict[str, Any]) -> str | None:
    """Why a Redis with this ``INFO memory`` may drop defacto's keys, or None.

    Refused: any ``allkeys-*`` policy, and any policy but ``noeviction`` when ``maxmemory`` is
    set: an evicted tally or checkpoint makes figures wrong without an error.
    """
    policy = str(info.get("maxmemory_policy", "noeviction"))
    limit = int(info.get("maxmemory", 0) or 0)
    if policy.startswith("allkeys-") or (limit > 0 and policy != "noeviction"):
        shown = f"maxmemory {limit} bytes" if limit else "no maxmemory"
        return (f"Redis may evict defacto's keys (maxmemory-policy {policy}, {shown}): an evicted "
                "tally or checkpoint would make figures wrong without an error; set "
                "maxmemory-policy noeviction (and persistence, appendonly yes)")
    return None


@dataclass(frozen=True)
class PublishSettings:
    """Where and how snapshots go to Redis: key ``prefix``, how long history is kept, how many
    announcements and alert events the streams keep, and the gap alert threshold (a fraction of
    the registry). Tallies have no expiry: they are deleted when their window is published."""

    prefix: str = "defacto"
    history_s: int = 7 * DAY_S
    announcements: int = 10_000
    gap_threshold: float = 0.10
    alert_log: int = 10_000


class SnapshotPublisher:
    """Writes tallies and checkpoints, and publishes combined snapshots, for one worker.

    ``engine`` (no devices needed) turns merged tallies into estimates with the deployment's
    calibration; ``partitions`` is the pings topic's partition count (a window is published
    once all of them closed it); ``every_ms`` the window length (UTC ms); ``registry`` region id
    → registered people; ``on_publish(snapshot, delay_s)`` is called after each publish with
    the wall-clock delay behind the window's end; ``fingerprint`` the deployment's settings
    (:func:`~stream.estimate.fingerprint.deployment_fingerprint`; None: not checked).

    Every write joins the deployment first (:meth:`join`) and raises :class:`RedisStateLost`
    once Redis lost the keys it joined; after that only an explicit :meth:`join` (the worker's
    recovery) writes again. :attr:`refusal` is ``(reason, message)`` while the next window
    cannot be published (``settings_mismatch``), else None; :attr:`skipped` counts windows
    skipped by reason (``missing_tally``).
    """

    def __init__(self, client: aioredis.Redis, engine: Engine, partitions: int, every_ms: int,
                 registry: dict[str, int] | None, settings: PublishSettings,
                 on_publish: Callable[[dict[str, Any], float], None] | None = None,
                 fingerprint: Fingerprint | None = None) -> None:
        self.redis = client
        self.keys = RedisKeys(settings.prefix)
        self.engine = engine
        self.partitions = partitions
        self.every_ms = every_ms
        self.registry = registry
        self.settings = settings
        self.fingerprint = fingerprint
        self.tally_fingerprint = fingerprint.tally().to_json() if fingerprint else ""
        self.resolutions = engine.cell_resolutions
        self.on_publish = on_publish or (lambda _snap, _delay: None)
        self.epoch: str | None = None
        self.refusal: tuple[str, str] | None = None
        self.skipped: Counter[str] = Counter()
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._write_tallies = client.register_script(_WRITE_TALLIES)
        self._write_health = client.register_script(_WRITE_HEALTH)
        self._set = client.register_script(_SET)

    async def join(self) -> Deployment:
        """Join the deployment: pin this worker's settings and a new epoch in ``P:deployment``
        unless they are there, then write under that record's epoch.

        Raises :class:`DeploymentMismatchError` when the pinned settings differ from this
        worker's (naming each difference).
        """
        token = secrets.token_hex(8)
        fp = self.fingerprint
        reply = await self._claim(keys=[self.keys.deployment], args=[
            token, fp.to_json() if fp else "", fp.digest if fp else "",
            iso_utc(int(time.time()) * SECOND_MS)])
        record = deployment_from_claim(reply, token, fp, self.keys.deployment)
        self.epoch = record.epoch
        return record

    async def _joined(self) -> str:
        if self.epoch is None:
            await self.join()
        assert self.epoch is not None
        return self.epoch

    def _lost(self, result: Any) -> None:
        if result == -1:
            raise RedisStateLost(self.keys.deployment)

    async def eviction_problem(self) -> str | None:
        """Why this Redis may drop defacto's keys (:func:`eviction_problem`), or None; a Redis
        that does not answer ``INFO memory`` (a managed service that hides it) is None."""
        try:
            info = await self.redis.info("memory")
        except ResponseError as exc:
            log.warning("cannot read Redis's eviction policy (INFO memory: %s): make sure it is "
                        "maxmemory-policy noeviction", exc)
            return None
        return eviction_problem(info)

    async def write_tallies(self, partition: int, tallies: list[Tally],
                            closed_until: int | None, last_accepted_ms: int | None = None,
                            first_window: int | None = None) -> int:
        """Store a partition's tallies for closed windows (stamped with this worker's tally
        fingerprint), raise its closed and last-ping marks and lower its first-window mark (to
        ``first_window``, by default the earliest of ``tallies``), in one atomic step.

        Tallies of windows already published are dropped. Returns how many were stored; raises
        :class:`RedisStateLost`.
        """
        epoch = await self._joined()
        if first_window is None and tallies:
            first_window = min(t.at_ms for t in tallies)
        keys = [self.keys.deployment, self.keys.published_until, self.keys.pending,
                self.keys.closed, self.keys.last_accepted, self.keys.first_window]
        args: list[Any] = [epoch, partition, _opt(closed_until), _opt(last_accepted_ms),
                           _opt(first_window)]
        for t in tallies:
            keys.append(self.keys.tally(t.at_ms))
            args += [t.at_ms, replace(t, fingerprint=self.tally_fingerprint).to_bytes()
                     if self.tally_fingerprint else t.to_bytes()]
        written = await self._write_tallies(keys=keys, args=args)
        self._lost(written)
        return int(written)

    async def load_tallies(self, partition: int) -> list[Tally]:
        """The partition's tallies of windows not yet published, oldest first (a worker that
        takes the partition over holds them, to rewrite them should Redis lose its data)."""
        published = await self.published_until()
        ends = await self.redis.zrangebyscore(self.keys.pending, "-inf", "+inf")
        out = []
        for at in sorted(int(e) for e in ends):
            if published is not None and at <= published:
                continue
            blob = await self.redis.hget(self.keys.tally(at), str(partition))
            if blob is not None:
                out.append(Tally.from_bytes(blob))
        return out

    async def checkpoint_writer(self) -> Callable[..., bool | None]:
        """A blocking call for a thread, under the epoch joined now:
        ``write(client, partition, offset, encoded, topic_id)`` stores a partition checkpoint
        (an :class:`~stream.estimate.checkpoint.EncodedCheckpoint`: a base, or a delta stored
        beside its base) with the id of the topic it was read from and this worker's tally
        fingerprint, unless a newer one (higher offset) is already there, through a synchronous
        ``client`` (so a blob of a hundred megabytes is packed and sent without holding the
        event loop). Returns whether it was stored, None for a delta whose base is no longer
        the stored one (write a base next); raises :class:`RedisStateLost`."""
        epoch = await self._joined()
        keys, fingerprint = self.keys, self.tally_fingerprint

        def write(client: redis.Redis, partition: int, offset: int, encoded: EncodedCheckpoint,
                  topic_id: str | None) -> bool | None:
            saved = client.register_script(_SAVE_IF_NEWER)(
                keys=[keys.deployment, keys.checkpoint(partition)],
                args=[epoch, offset, encoded.blob, topic_id or "", fingerprint,
                      encoded.base.id, "1" if encoded.delta else "0"])
            self._lost(saved)
            return None if saved == -2 else bool(saved)
        return write

    async def load_checkpoint_record(self, partition: int) -> CheckpointRecord | None:
        """The partition's latest checkpoint with what was stored beside it, if any."""
        data, delta, offset, topic_id, fingerprint = await self.redis.hmget(
            self.keys.checkpoint(partition), "data", "delta", "offset", "topic_id",
            "fingerprint")
        if data is None:
            return None
        fp = _text(fingerprint)
        return CheckpointRecord(data, int(offset) if offset is not None else None,
                                _text(topic_id) or None,
                                Fingerprint.from_json(fp) if fp else None, delta)

    def checkpoint_problem(self, record: CheckpointRecord) -> str | None:
        """What differs between the settings a checkpoint was taken under and this worker's
        (``""``/None when equal or not recorded)."""
        if record.fingerprint is None or self.fingerprint is None:
            return None
        return describe_difference(self.fingerprint.tally(), record.fingerprint.tally(),
                                   "here", "in the checkpoint") or None

    async def first_window_of(self, partition: int) -> int | None:
        """End of the first window the partition tallied, if recorded."""
        v = await self.redis.hget(self.keys.first_window, str(partition))
        return int(v) if v is not None else None

    async def published_until(self) -> int | None:
        """End of the last published window (ms), if any."""
        v = await self.redis.get(self.keys.published_until)
        return int(v) if v is not None else None

    async def try_publish(self) -> list[int]:
        """Publish, in order, every window that all partitions have closed; returns the windows
        published. Stops at a window that cannot be published (:attr:`refusal`). Raises
        :class:`RedisStateLost` and :class:`DeploymentMismatchError` (see :meth:`join`)."""
        await self._joined()
        self._check_record(*await self.redis.hmget(self.keys.deployment, "epoch", "digest"))
        closed = {int(k): int(v) for k, v in (await self.redis.hgetall(self.keys.closed)).items()}
        if any(p not in closed for p in range(self.partitions)):
            return []
        last = [int(v) for v in (await self.redis.hgetall(self.keys.last_accepted)).values()]
        if not last:
            return []
        # like the end of a replay: no window beyond the one holding the last accepted ping
        data_end = (max(last) // self.every_ms + 1) * self.every_ms
        ready_until = min(min(closed[p] for p in range(self.partitions)), data_end)
        firsts = {int(k): int(v) for k, v in
                  (await self.redis.hgetall(self.keys.first_window)).items()}
        done: list[int] = []
        ends = await self.redis.zrangebyscore(self.keys.pending, "-inf", ready_until)
        refusal = None
        for at in sorted(int(e) for e in ends):
            outcome, why = await self._publish_one(at, firsts)
            if outcome == PUBLISHED:
                done.append(at)
            elif outcome == REFUSED:
                refusal = why
                break
        if refusal is not None and refusal != self.refusal:
            log.error("%s", refusal[1])
        self.refusal = refusal
        return done

    def _check_record(self, epoch: bytes | None, digest: bytes | None) -> None:
        """Raise :class:`RedisStateLost` when the deployment record is not the one joined, and
        :class:`DeploymentMismatchError` when its settings are not this worker's."""
        if self.epoch is None or _text(epoch) != self.epoch:
            raise RedisStateLost(self.keys.deployment)
        if self.fingerprint is not None and _text(digest) not in ("", self.fingerprint.digest):
            raise DeploymentMismatchError(
                f"the deployment's settings (Redis key {self.keys.deployment}) were pinned again "
                "by a worker with other settings: this worker stops publishing")

    def _tally_problem(self, blobs: dict[bytes, bytes], at_ms: int) -> tuple[list[Tally], str | None]:
        """The window's tallies, and what makes them unfit to be summed with this worker's
        settings (None when nothing does)."""
        tallies = []
        for field, blob in sorted(blobs.items()):
            t = Tally.from_bytes(blob)
            if t.fingerprint and self.tally_fingerprint and t.fingerprint != self.tally_fingerprint:
                diff = describe_difference(Fingerprint.from_json(self.tally_fingerprint),
                                           Fingerprint.from_json(t.fingerprint), "here",
                                           f"in partition {_text(field)}'s tally")
                return [], (f"window {iso_utc(at_ms)} not published: partition {_text(field)}'s "
                            f"tally was taken with other settings ({diff}); a worker with other "
                            "files or options wrote it: stop it, then the window is published "
                            "once its partition is tallied again under the deployment's settings")
            tallies.append(t)
        return tallies, None

    async def _publish_one(self, at_ms: int, firsts: dict[int, int]
                           ) -> tuple[str, tuple[str, str] | None]:
        """Publish the window ending at ``at_ms`` unless another worker already did (WATCH on
        ``published_until``); every key of the snapshot in one MULTI/EXEC, the window's tallies
        deleted in it. ``firsts``: partition → its first tallied window (a partition with none
        recorded is required). Returns the outcome and, when refused, ``(reason, message)``."""
        pu_key = self.keys.published_until
        tally_key = self.keys.tally(at_ms)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(pu_key, self.keys.deployment)
                epoch, digest = await pipe.hmget(self.keys.deployment, "epoch", "digest")
                self._check_record(epoch, digest)
                current = await pipe.get(pu_key)
                if current is not None and int(current) >= at_ms:
                    pipe.multi()
                    pipe.zrem(self.keys.pending, str(at_ms))
                    pipe.delete(tally_key)
                    await pipe.execute()
                    return ALREADY, None
                blobs = await pipe.hgetall(tally_key)
                have = {int(k) for k in blobs}
                missing = [p for p in range(self.partitions)
                           if p not in have and firsts.get(p, at_ms) <= at_ms]
                if missing:
                    pipe.multi()
                    pipe.zrem(self.keys.pending, str(at_ms))
                    pipe.delete(tally_key)
                    await pipe.execute()
                    self.skipped["missing_tally"] += 1
                    log.error("window %s skipped, never published: the tally of partition(s) %s "
                              "is gone although they closed the window (Redis lost it after the "
                              "window was published, or it was evicted); the figures of that "
                              "window cannot be rebuilt exactly", iso_utc(at_ms),
                              ", ".join(map(str, missing)))
                    return SKIPPED, None
                tallies, problem = self._tally_problem(blobs, at_ms)
                if problem is not None:
                    await pipe.unwatch()
                    return REFUSED, ("settings_mismatch", problem)
                tally = merge_tallies(tallies)
                est = self.engine.estimate_tally(tally)
                snap = self.snapshot(est, self.engine.warm_up_tally(tally))
                same_epoch = await pipe.get(self.keys.periods_epoch) == epoch
                recorded = ({k.decode() for k in await pipe.hkeys(self.keys.flows_history)}
                            if tally.migration is not None else set())
                flows = self.flows(tally, est)
                foreign = self.foreign(tally)
                if same_epoch:  # final documents of another deployment are not kept
                    flows = kept_final(await pipe.hgetall(self.keys.flows), flows)
                    if foreign:
                        foreign = kept_final(await pipe.hgetall(self.keys.foreign), foreign)
                add_foreign_line(snap, foreign)
                published_at = time.time()
                snap["published_at"] = iso_utc(int(published_at * SECOND_MS))
                active = _open_alerts(await pipe.hgetall(self.keys.alerts_active))
                alerts = gap_alerts(active, snap, at_ms, self.settings.gap_threshold)
                pipe.multi()
                self._queue_snapshot(pipe, at_ms, snap, self._cells(est))
                pipe.delete(self.keys.flows)
                if flows:
                    pipe.hset(self.keys.flows, mapping={
                        field: compact_json(doc) for field, doc in flows.items()})
                    history = flows_history(flows)
                    history.update(flows_history(self.unrecorded_finals(
                        tally, est, recorded | set(history))))
                    if history:
                        pipe.hset(self.keys.flows_history, mapping=history)
                pipe.set(self.keys.periods_epoch, epoch)
                pipe.delete(self.keys.foreign)
                if foreign:
                    pipe.hset(self.keys.foreign, mapping={
                        field: compact_json(doc)
                        for field, doc in foreign.items()})
                self._queue_alerts(pipe, at_ms, *alerts)
                pipe.publish(self.keys.announce, snap["at"])
                pipe.set(pu_key, at_ms)
                pipe.zremrangebyscore(self.keys.pending, "-inf", at_ms)
                pipe.delete(tally_key)
                await pipe.execute()
            except WatchError:
                return ALREADY, None
        self.on_publish(snap, published_at - at_ms / SECOND_MS)
        return PUBLISHED, None

    def _cells(self, est: Estimate) -> dict[int, dict[str, str]]:
        """Present population per H3 cell at each published resolution ("null": suppressed)."""
        out = {}
        finest = (self.engine.config.res, (est.cell_id, est.cell_present))
        for res, (ids, present) in [*est.coarse_cells.items(), finest]:
            out[res] = {cid: "null" if v is None else str(v)
                        for cid, v in zip(cell_ids(ids), counts_or_null(present), strict=True)}
        return out

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
        warm = self.engine.period_warm_up(tally)
        return {field: period_flows(p, est, self.engine.regions, k, mig, warm)
                for field, p in tally.migration.published().items()}

    def unrecorded_finals(self, tally: Tally, est: Estimate, recorded: set[str]
                          ) -> dict[str, dict[str, Any]]:
        """Flow documents of the tally's final periods (each dating) whose history entry
        (``<kind>:<dating>:<period>``) is not in ``recorded``: older ones that became final at
        the same snapshot as a later one (a gap in the data), so that ``P:flows:history`` holds
        every final period, as ``replay --flows-out`` writes every one."""
        mig = self.engine.config.migration
        if tally.migration is None or mig is None:
            return {}
        k = self.engine.config.estimate.k_anonymity
        warm = None
        out = {}
        for view in tally.migration.final_views():
            key = f"{view.kind}:{view.dating}:{view.label}"
            if key not in recorded:
                warm = warm or self.engine.period_warm_up(tally)
                out[key] = period_flows(view, est, self.engine.regions, k, mig, warm)
        return out

    def foreign(self, tally: Tally) -> dict[str, dict[str, Any]] | None:
        """The foreign-SIM documents of a merged tally's published periods
        (:func:`~stream.publish.foreign.published_foreign`); None with foreign stays off."""
        cfg = self.engine.config
        if tally.foreign is None or cfg.foreign is None:
            return None
        return published_foreign(tally.foreign, self.engine.regions, tally.at_ms,
                                 cfg.foreign_figures, cfg.foreign,
                                 self.engine.period_warm_up(tally), self.engine.country_factors)

    def _queue_snapshot(self, pipe: Any, at_ms: int, snap: dict[str, Any],
                        cells: dict[int, dict[str, str]]) -> None:
        """Queue the snapshot, its regions, cells, history entry and announcement."""
        pipe.set(self.keys.snapshot, compact_json(snap))
        pipe.delete(self.keys.regions)
        pipe.hset(self.keys.regions, mapping={
            rid: compact_json(fig) for rid, fig in snap["regions"].items()})
        for res in self.resolutions:
            values = cells.get(res, {})
            pipe.delete(self.keys.cells(res))
            if values:
                pipe.hset(self.keys.cells(res), mapping=values)
        compact = {"at": snap["at"], "regions": {
            rid: {k: fig[k] for k in HISTORY_FIGURES} for rid, fig in snap["regions"].items()}}
        pipe.zadd(self.keys.history, {compact_json(compact): at_ms})
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

    def snapshot(self, est: Estimate, warm: WarmUp | None = None) -> dict[str, Any]:
        """The snapshot JSON object of the estimate from a (merged) tally; ``warm``: its
        warm-up state (:meth:`~estimators.engine.Engine.warm_up_tally`)."""
        cfg = self.engine.config.estimate
        return build_snapshot(est, self.engine.regions, self.engine.config.res, self.registry,
                              {"horizon_s": cfg.horizon_ms // SECOND_MS, "k": cfg.k_anonymity,
                               "gap_threshold": self.settings.gap_threshold,
                               "cell_resolutions": list(self.resolutions)}, warm)

    async def publish_geometry(self, regions: RegionSet) -> None:
        """Store the region outlines (GeoJSON lines, 5 decimals) for the dashboard's map."""
        features = [{"type": "Feature", "id": r.id,
                     "properties": {"name": r.name, "parent": r.parent},
                     "geometry": {"type": "MultiLineString", "coordinates": [
                         np.round(ring, 5).tolist() for ring in r.rings]}}
                    for r in regions.regions]
        epoch = await self._joined()
        self._lost(await self._set(keys=[self.keys.deployment, self.keys.geometry], args=[
            epoch, json.dumps({"type": "FeatureCollection", "features": features},
                              separators=(",", ":"))]))

    async def forget_health(self, partition: int) -> None:
        """Drop a partition's health fields (it was revoked; its next owner writes them)."""
        await self.redis.hdel(self.keys.health, health_field("lag", partition),
                              health_field("seen", partition))

    async def write_health(self, lags: dict[int, int], seen: dict[int, float],
                           counts: dict[str, int]) -> None:
        """Record partitions' lag and last batch time, and add this worker's ping counts (one
        atomic step; raises :class:`RedisStateLost`)."""
        epoch = await self._joined()
        fields = {health_field("lag", p): n for p, n in lags.items()}
        fields.update({health_field("seen", p): round(t, 3) for p, t in seen.items()})
        args: list[Any] = [epoch, len(fields)]
        for kv in fields.items():
            args += kv
        for name, n in counts.items():
            if n:
                args += [name, n]
        self._lost(await self._write_health(
            keys=[self.keys.deployment, self.keys.health, self.keys.counts], args=args))

    async def latest_flows(self) -> dict[str, dict[str, Any]]:
        """The migration flows published with the latest snapshot (see :meth:`flows`)."""
        raw = await self.redis.hgetall(self.keys.flows)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def latest_foreign(self) -> dict[str, dict[str, Any]]:
        """The foreign-SIM documents published with the latest snapshot (see :meth:`foreign`)."""
        raw = await self.redis.hgetall(self.keys.foreign)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def latest(self) -> dict[str, Any] | None:
        """The latest published snapshot, if any."""
        body = await self.redis.get(self.keys.snapshot)
        return json.loads(body) if body else None


@dataclass(frozen=True)
class CheckpointRecord:
    """A stored checkpoint: its blob (the base), the next ``offset``, the ``topic_id`` of the
    topic it was read from, the tally ``fingerprint`` it was taken under (None: not recorded)
    and the latest ``delta`` written against the base (None: the base is the latest)."""

    data: bytes
    offset: int | None
    topic_id: str | None
    fingerprint: Fingerprint | None
    delta: bytes | None = None


def kept_final(stored: dict[bytes, bytes], docs: dict[str, dict[str, Any]]
               ) -> dict[str, dict[str, Any]]:
    """``docs`` (field → period document, as ``P:flows`` or ``P:foreign`` hold them) with each
    final document replaced by the one ``stored`` under its field when that one is the same
    period (and dating), final too. So a final period is published as of the first snapshot
    that had it final, as ``replay --flows-out`` writes it, and later snapshots do not re-scale
    it (its people, ``at`` and warm-up would otherwise move with every snapshot's resident
    estimate; its history entry likewise). A stored field that is not a JSON object is
    replaced, with a warning. ``stored`` must come from the same deployment epoch (settings,
    registry and calibration): the caller checks ``P:periods:epoch``."""
    out = dict(docs)
    for field, doc in docs.items():
        raw = stored.get(field.encode()) if doc.get("final") else None
        if raw is None:
            continue
        try:
            old = json.loads(raw)
            same = bool(old.get("final")) and (old.get("period"), old.get("dating")) == (
                doc.get("period"), doc.get("dating"))
        except (ValueError, AttributeError):
            log.warning("the stored %r period document is not a JSON object; replaced", field)
            continue
        if same:
            out[field] = old
    return out


def _opt(v: int | None) -> str:
    return "" if v is None else str(v)


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


__all__ = ["CheckpointRecord", "Deployment", "DeploymentMismatchError", "PublishSettings",
           "RedisError", "RedisStateLost", "SnapshotPublisher", "eviction_problem"]
