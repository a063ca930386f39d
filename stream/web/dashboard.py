"""``defacto dashboard``: the planners' live web page, read from the Redis a worker publishes to.

One aiohttp application serves a static page (``stream/web/static``: vanilla JavaScript drawing
SVG, nothing loaded from outside the server) and the JSON it draws from. Every figure comes from
the public Redis keys (:class:`~stream.publish.redis_keys.RedisKeys`) under a prefix ``P``;
nothing is written to Redis and no device pseudonym or key exists there to be shown.

Endpoints:

- ``GET /`` the page; ``GET /static/<file>`` its script and style sheet;
- ``GET /api/state`` the latest snapshot without cells, the gap alerts, pipeline health and ping
  counts (``404`` with ``"waiting": true`` until the first snapshot is published);
- ``GET /api/cells?res=N`` present population per H3 cell at a published resolution, ``null``
  when suppressed (fewer than k devices), with each cell's boundary as ``[lon, lat]`` pairs
  (``400`` for a resolution the snapshot does not have);
- ``GET /api/geometry`` the region outlines (GeoJSON ``MultiLineString`` features);
- ``GET /api/history?region=ID`` that region's figures over the retained snapshots (``404`` for
  an unknown region);
- ``GET /api/alerts`` open alerts and the latest opened/closed events;
- ``GET /api/flows`` the migration flows of the open and last closed week and month;
- ``GET /api/foreign`` the foreign-SIM figures of the open, last closed and last settled week
  and month (arrivals by country, stock by stay class, long-stayers per region);
- ``GET /healthz`` ``200`` when Redis answers, ``503`` otherwise;
- ``GET /events`` server-sent events: one ``snapshot`` event per entry of ``P:snapshots`` (read
  with ``XREAD BLOCK``, the entry id as the event id so a reconnecting browser resumes), a
  ``status`` event when Redis goes down or comes back, and a comment line every
  ``heartbeat_s`` seconds so proxies keep the connection open.

Redis unavailable: the JSON endpoints answer ``503`` with the reason, ``/events`` keeps its
connection and retries every few seconds; the page shows the outage and recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from estimators.units import SECOND_MS
from stream.publish.cells_view import cells_document, error_body, no_snapshot, shown
from stream.publish.redis_keys import REJECTED_PREFIX, RedisKeys, parse_health_field, redact_url
from stream.timefmt import iso_utc, parse_iso_ms

STATIC_DIR = Path(__file__).with_name("static")
HEARTBEAT_S = 15.0
REDIS_RETRY_S = 3.0
ALERT_LOG_ENTRIES = 50
SSE_BATCH = 100
MAX_EVENT_CLIENTS = 100  # each open /events holds one Redis connection (XREAD BLOCK)
_EVENT_ID = re.compile(r"\A[0-9]{1,20}-[0-9]{1,20}\Z")  # ASCII only (\d takes any Unicode digit)
_SECURITY_HEADERS = {
    # nothing outside this server may be loaded, framed or connected to
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class DashboardContext:
    """Per-application settings and Redis clients."""

    def __init__(self, redis_url: str, prefix: str, heartbeat_s: float, retry_s: float) -> None:
        self.redis_url = redis_url
        self.shown_url = redact_url(redis_url)
        self.keys = RedisKeys(prefix)
        self.prefix = prefix
        self.heartbeat_s = heartbeat_s
        self.retry_s = retry_s
        # XREAD blocks at most block_s; the stream client's socket timeout leaves room for it
        self.block_s = max(0.05, min(5.0, heartbeat_s))
        self.redis: aioredis.Redis | None = None
        self.stream_redis: aioredis.Redis | None = None
        self.sse_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self.max_event_clients = MAX_EVENT_CLIENTS


CTX: web.AppKey[DashboardContext] = web.AppKey("defacto_dashboard", DashboardContext)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json_bytes(status, error_body(status, message, **extra))


def _json_bytes(status: int, body: bytes) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _compressed_json(body: str | bytes) -> web.Response:
    """An uncached JSON response, compressed when the browser accepts it (cells are large)."""
    resp = web.Response(body=body.encode() if isinstance(body, str) else body,
                        content_type="application/json", headers={"Cache-Control": "no-store"})
    resp.enable_compression()
    return resp


def _text(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def _millis(v: str | None) -> int | None:
    """Milliseconds from a stream entry's ``at_ms`` (ASCII digits only, as the worker writes
    them; ``str.isdigit`` would pass ``²``, which ``int`` refuses), else None."""
    return int(v) if v is not None and re.fullmatch(r"[0-9]{1,18}", v) else None


def _number(v: bytes | str | None) -> float | None:
    text = _text(v)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _alerts(active: dict[bytes, bytes], log: list[tuple[bytes, dict[bytes, bytes]]]
            ) -> dict[str, Any]:
    """Open alerts (largest magnitude first) and the latest log events (newest first)."""
    open_ = [json.loads(v) for v in active.values()]
    open_.sort(key=lambda a: (-abs(a.get("magnitude") or 0.0), a.get("region", "")))
    for a in open_:
        a["since"] = iso_utc(int(a["since_ms"])) if a.get("since_ms") is not None else None
        a["at"] = iso_utc(int(a["at_ms"])) if a.get("at_ms") is not None else None
    events = []
    for eid, fields in log:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        at_ms = _millis(f.get("at_ms"))
        events.append({"id": eid.decode(), "event": f.get("event"), "at_ms": at_ms,
                       "at": iso_utc(at_ms) if at_ms is not None else None,
                       "alert": json.loads(f["alert"]) if f.get("alert") else None})
    return {"active": open_, "log": events}


def _health(fields: dict[bytes, bytes], now: float) -> dict[str, Any]:
    """Per-partition consumer lag and last-batch time, with the total lag."""
    parts: dict[int, dict[str, Any]] = {}
    for k, v in fields.items():
        parsed = parse_health_field(k.decode(errors="replace"))
        if parsed is None:
            continue
        kind, p = parsed
        row = parts.setdefault(p, {"partition": p, "lag": None, "seen": None, "seen_age_s": None})
        n = _number(v)
        if kind == "lag":
            row["lag"] = int(n) if n is not None else None
        else:
            row["seen"] = n
            row["seen_age_s"] = round(now - n, 1) if n is not None else None
    rows = [parts[p] for p in sorted(parts)]
    lags = [r["lag"] for r in rows if r["lag"] is not None]
    return {"partitions": rows, "total_lag": sum(lags) if lags else None}


def _counts(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """Cumulative ping counts: accepted, duplicate, rejected and rejected by reason."""
    out: dict[str, Any] = {"accepted": 0, "duplicate": 0, "rejected": 0, "rejected_by_reason": {}}
    for k, v in fields.items():
        name, n = k.decode(), int(_number(v) or 0)
        if name.startswith(REJECTED_PREFIX):
            out["rejected_by_reason"][name.removeprefix(REJECTED_PREFIX)] = n
        else:
            out[name] = n
    out["rejected_by_reason"] = dict(sorted(out["rejected_by_reason"].items(),
                                            key=lambda kv: (-kv[1], kv[0])))
    return out


async def _read_state(ctx: DashboardContext) -> dict[str, Any] | None:
    """Snapshot (without cells), alerts, health and counts, read in one transaction."""
    assert ctx.redis is not None
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.get(ctx.keys.snapshot)
    pipe.hgetall(ctx.keys.alerts_active)
    pipe.xrevrange(ctx.keys.alerts_log, count=ALERT_LOG_ENTRIES)
    pipe.hgetall(ctx.keys.health)
    pipe.hgetall(ctx.keys.counts)
    body, active, log, health, counts = await pipe.execute()
    if not body:
        return None
    snap = json.loads(body)
    snap.pop("cells", None)
    with contextlib.suppress(KeyError, ValueError, TypeError, AttributeError):
        snap["at_ms"] = parse_iso_ms(snap["at"])
    now = time.time()
    return {"prefix": ctx.prefix, "now": iso_utc(int(now * SECOND_MS)), "now_ms": int(now * SECOND_MS),
            "snapshot": snap, "alerts": _alerts(active, log), "health": _health(health, now),
            "counts": _counts(counts)}


async def api_state(request: web.Request) -> web.Response:
    """``GET /api/state``: latest snapshot (no cells), alerts, health and counts."""
    ctx = request.app[CTX]
    state = await _read_state(ctx)
    if state is None:
        return _json_bytes(*no_snapshot(ctx.keys))
    return web.json_response(state, headers={"Cache-Control": "no-store"})


async def api_cells(request: web.Request) -> web.Response:
    """``GET /api/cells?res=N``: present population per H3 cell (``null``: suppressed); see
    :func:`~stream.publish.cells_view.cells_document`."""
    ctx = request.app[CTX]
    assert ctx.redis is not None
    status, body = await cells_document(ctx.redis, ctx.keys, request.query.get("res", ""))
    return _compressed_json(body) if status == 200 else _json_bytes(status, body)


async def api_geometry(request: web.Request) -> web.Response:
    """``GET /api/geometry``: the region outlines written by the worker."""
    ctx = request.app[CTX]
    assert ctx.redis is not None
    body = await ctx.redis.get(ctx.keys.geometry)
    if not body:
        return _error(404, f"no region geometry under the Redis prefix {ctx.prefix!r} yet "
                           "(a worker writes it when it starts)", waiting=True)
    return _compressed_json(body)


async def api_history(request: web.Request) -> web.Response:
    """``GET /api/history?region=ID``: one region's figures in every retained snapshot."""
    ctx = request.app[CTX]
    assert ctx.redis is not None
    region = request.query.get("region", "")
    if not region:
        return _error(400, "give the region: /api/history?region=ID")
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.get(ctx.keys.snapshot)
    pipe.zrange(ctx.keys.history, 0, -1, withscores=True)
    body, entries = await pipe.execute()
    if not body and not entries:
        return _json_bytes(*no_snapshot(ctx.keys))
    snap = json.loads(body) if body else {"regions": {}}
    name = (snap["regions"].get(region) or {}).get("name")
    points = []
    for member, score in entries:
        doc = json.loads(member)
        fig = doc.get("regions", {}).get(region)
        if fig is None:
            continue
        name = name or fig.get("name")
        points.append({"at": doc.get("at"), "at_ms": int(score), **fig})
    if not points and region not in snap["regions"]:
        return _error(404, f"unknown region {shown(region)}: not in the latest snapshot nor its "
                           "history")
    points.sort(key=lambda p: p["at_ms"])
    return web.json_response({"region": region, "name": name or region, "points": points},
                             headers={"Cache-Control": "no-store"})


async def api_flows(request: web.Request) -> web.Response:
    """``GET /api/flows``: the migration flows published with the latest snapshot, by period
    (``week``, ``month`` open; ``week:closed``, ``month:closed`` the last closed ones;
    ``week:effective``, ``month:effective`` the last settled ones), and ``history``: the rural
    balance of every final period, oldest first."""
    ctx = request.app[CTX]
    assert ctx.redis is not None
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.hgetall(ctx.keys.flows)
    pipe.hvals(ctx.keys.flows_history)
    raw, history_raw = await pipe.execute()
    periods = {k.decode(): json.loads(v) for k, v in raw.items()}
    history = sorted((json.loads(v) for v in history_raw),
                     key=lambda h: (h["kind"], h["dating"], h["first_night"]))
    return _compressed_json(json.dumps({"periods": periods, "history": history},
                                       separators=(",", ":")))


async def api_foreign(request: web.Request) -> web.Response:
    """``GET /api/foreign``: the foreign-SIM documents published with the latest snapshot, by
    period (``week``, ``month`` open; ``week:closed``, ``month:closed`` the last closed ones;
    ``week:settled``, ``month:settled`` the last settled ones); empty with foreign stays off."""
    ctx = request.app[CTX]
    assert ctx.redis is not None
    raw = await ctx.redis.hgetall(ctx.keys.foreign)
    body = b'{"periods":{' + b",".join(
        json.dumps(k.decode()).encode() + b":" + v for k, v in sorted(raw.items())) + b"}}"
    return _compressed_json(body)


async def api_alerts(request: web.Request) -> web.Response:
    """``GET /api/alerts``: open gap alerts and the latest opened/closed events."""
    ctx = request.app[CTX]
    assert ctx.redis is not None
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.hgetall(ctx.keys.alerts_active)
    pipe.xrevrange(ctx.keys.alerts_log, count=ALERT_LOG_ENTRIES)
    active, log = await pipe.execute()
    return web.json_response(_alerts(active, log), headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 when Redis answers (with the latest snapshot time), else 503."""
    ctx = request.app[CTX]
    assert ctx.redis is not None
    try:
        await ctx.redis.ping()
        body = await ctx.redis.get(ctx.keys.snapshot)
    except RedisError as exc:
        return _error(503, f"Redis at {ctx.shown_url} is unavailable: {exc}", redis="down")
    at = json.loads(body).get("at") if body else None
    return web.json_response({"status": "ok", "redis": "ok", "prefix": ctx.prefix, "snapshot": at})


async def index(request: web.Request) -> web.FileResponse:
    """``GET /``: the page."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def _sse(event: str | None, data: Any, eid: str | None = None) -> bytes:
    lines = []
    if eid:
        lines.append(f"id: {eid}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def _entry(eid: bytes, fields: dict[bytes, bytes]) -> tuple[str, dict[str, Any]]:
    f: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
    at_ms = _millis(f.get("at_ms"))
    if at_ms is not None:
        f["at_ms"] = at_ms
    return eid.decode(), f


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /events``: server-sent events, one per published snapshot (see the module doc).

    Without ``Last-Event-ID`` the latest announcement is sent first, so a page that connects
    late is told which snapshot is current; with it, the missed announcements follow.
    """
    ctx = request.app[CTX]
    assert ctx.stream_redis is not None
    if len(ctx.sse_tasks) >= ctx.max_event_clients:
        # each stream holds a Redis connection: never let browsers exhaust the workers' Redis
        return _error(503, f"too many live connections ({ctx.max_event_clients}); the page "
                           "retries by itself", retry_after_s=int(ctx.retry_s) + 1)
    r = ctx.stream_redis
    key = ctx.keys.snapshots
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    task = asyncio.current_task()
    if task is not None:
        ctx.sse_tasks.add(task)
    last = request.headers.get("Last-Event-ID", "").strip()
    last_id: str | None = last if _EVENT_ID.match(last) else None
    loop = asyncio.get_running_loop()
    redis_up: bool | None = None
    try:
        await resp.write(f"retry: {int(ctx.retry_s * SECOND_MS)}\n\n".encode())
        last_write = loop.time()
        while not _gone(request):
            out: list[bytes] = []
            try:
                if redis_up is False:
                    await r.ping()  # say it is back before blocking on the stream
                    await resp.write(_sse("status", {"redis": "up"}))
                    last_write = loop.time()
                    redis_up = True
                if last_id is None:
                    latest = await r.xrevrange(key, count=1)
                    last_id = "0-0"
                    if latest:
                        last_id, fields = _entry(*latest[0])
                        out.append(_sse("snapshot", fields, last_id))
                wait = max(0.05, min(ctx.block_s, ctx.heartbeat_s - (loop.time() - last_write)))
                got = await r.xread({key: last_id}, count=SSE_BATCH, block=int(wait * SECOND_MS))
            except RedisError as exc:
                if redis_up is not False:
                    await resp.write(_sse("status", {
                        "redis": "down", "error": f"Redis at {ctx.shown_url} is unavailable: {exc}"}))
                    last_write = loop.time()
                redis_up = False
                await asyncio.sleep(ctx.retry_s)
                continue
            redis_up = True
            for _stream, entries in got or []:
                for eid, fields in entries:
                    last_id, f = _entry(eid, fields)
                    out.append(_sse("snapshot", f, last_id))
            if not out and loop.time() - last_write >= ctx.heartbeat_s - 0.01:
                out.append(b": heartbeat\n\n")
            if out:
                await resp.write(b"".join(out))
                last_write = loop.time()
    except ConnectionError:
        pass  # the browser went away
    finally:
        if task is not None:
            ctx.sse_tasks.discard(task)
    return resp


@web.middleware
async def _middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Security headers everywhere; Redis errors become a clear 503; unknown API paths JSON 404."""
    try:
        resp = await handler(request)
    except RedisError as exc:
        ctx = request.app[CTX]
        resp = _error(503, f"Redis at {ctx.shown_url} is unavailable: {exc}", redis="down")
    except web.HTTPNotFound:
        if not request.path.startswith("/api/"):
            raise
        resp = _error(404, f"no such endpoint: {request.path}")
    for k, v in _SECURITY_HEADERS.items():
        resp.headers.setdefault(k, v)
    if request.path.startswith("/static/"):
        resp.headers.setdefault("Cache-Control", "no-cache")
    return resp


async def _startup(app: web.Application) -> None:
    ctx = app[CTX]
    ctx.redis = aioredis.from_url(ctx.redis_url, socket_timeout=5, socket_connect_timeout=2)
    ctx.stream_redis = aioredis.from_url(ctx.redis_url, socket_timeout=ctx.block_s + 10,
                                         socket_connect_timeout=2,
                                         max_connections=ctx.max_event_clients + 4)


async def _shutdown(app: web.Application) -> None:
    """Stop the open event streams (they would otherwise hold the shutdown)."""
    for task in list(app[CTX].sse_tasks):
        task.cancel()


async def _cleanup(app: web.Application) -> None:
    ctx = app[CTX]
    for client in (ctx.redis, ctx.stream_redis):
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()


def create_dashboard_app(redis_url: str, prefix: str, *, heartbeat_s: float = HEARTBEAT_S,
                         retry_s: float = REDIS_RETRY_S,
                         max_event_clients: int = MAX_EVENT_CLIENTS) -> web.Application:
    """The dashboard's aiohttp application reading the keys under ``prefix`` at ``redis_url``.

    ``heartbeat_s`` is the longest silence on ``/events`` (a comment line is sent then),
    ``retry_s`` how long ``/events`` waits before retrying an unavailable Redis, and
    ``max_event_clients`` how many ``/events`` streams may be open at once (each holds a Redis
    connection; more get ``503`` and the browser retries).
    """
    if not heartbeat_s > 0 or not retry_s > 0 or max_event_clients < 1:
        raise ValueError("heartbeat_s and retry_s must be positive, max_event_clients >= 1")
    app = web.Application(middlewares=[_middleware])
    ctx = app[CTX] = DashboardContext(redis_url, prefix, heartbeat_s, retry_s)
    ctx.max_event_clients = max_event_clients
    app.router.add_get("/", index)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/api/cells", api_cells)
    app.router.add_get("/api/geometry", api_geometry)
    app.router.add_get("/api/history", api_history)
    app.router.add_get("/api/alerts", api_alerts)
    app.router.add_get("/api/flows", api_flows)
    app.router.add_get("/api/foreign", api_foreign)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/events", events)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


async def _say_if_redis_is_down(redis_url: str, shown_url: str) -> None:
    """One warning line when Redis does not answer at start (the page then says so and
    recovers by itself; a mistyped ``--redis`` should not wait for someone to open it)."""
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        print(f"defacto: warning: Redis {shown_url} did not answer ({exc}): the page shows no "
              "figures until it does (/healthz 503); check --redis / REDIS_URL",
              file=sys.stderr, flush=True)
    finally:
        await client.aclose()


async def _serve(app: web.Application, host: str, port: int, prefix: str, shown_url: str) -> int:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    stop = asyncio.Event()
    code = 0
    loop = asyncio.get_running_loop()

    def _stop(rc: int) -> None:
        nonlocal code
        code = rc
        stop.set()

    for sig, rc in ((signal.SIGINT, 130), (signal.SIGTERM, 0)):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _stop, rc)
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            print(f"defacto: error: cannot listen on {host}:{port}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        shown_host = f"[{host}]" if ":" in host else host
        print(f"defacto dashboard: http://{shown_host}:{port}/  (Redis {shown_url}, prefix "
              f"{prefix!r}; Ctrl-C stops it)", file=sys.stderr, flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"defacto: warning: listening on {host}, not only on this machine; the page "
                  "has no authentication", file=sys.stderr, flush=True)
        await _say_if_redis_is_down(app[CTX].redis_url, shown_url)
        await stop.wait()
        return code
    finally:
        await runner.cleanup()


def serve(redis_url: str, prefix: str, host: str = "127.0.0.1", port: int = 8050) -> int:
    """Serve the dashboard until Ctrl-C (exit code 130) or SIGTERM (0); prints the URL to stderr.

    Returns 1 when the port cannot be bound. Redis need not be up: the page says so and
    recovers when it is.
    """
    app = create_dashboard_app(redis_url, prefix)
    try:
        return asyncio.run(_serve(app, host, port, prefix, redact_url(redis_url)))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


__all__ = ["CTX", "DashboardContext", "create_dashboard_app", "serve"]
