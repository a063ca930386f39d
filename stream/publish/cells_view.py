"""The published cells of the latest snapshot as one JSON document, served by dashboard and worker.

``GET /api/cells?res=N`` on either answers with :func:`cells_document`: present population per
H3 cell at a published resolution, ``null`` where suppressed (fewer than k devices), each with its
boundary as ``[lon, lat]`` pairs, plus the snapshot's time, k and totals.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import h3
import redis.asyncio as aioredis

from stream.publish.redis_keys import RedisKeys


def cell_boundary(cell: str) -> list[list[float]]:
    """An H3 cell's outline as ``[lon, lat]`` pairs (5 decimals, about a metre)."""
    return [[round(lng, 5), round(lat, 5)] for lat, lng in h3.cell_to_boundary(cell)]


@functools.lru_cache(maxsize=200_000)
def _boundary_json(cell: str) -> str:
    """:func:`cell_boundary` as JSON text, cached (cells repeat from snapshot to snapshot)."""
    return json.dumps(cell_boundary(cell), separators=(",", ":"))


SHOWN_CHARS = 40
"""At most this many characters of a request's value are echoed back in an error."""


def shown(text: str) -> str:
    """``text`` as it is echoed in an error: quoted, cut to :data:`SHOWN_CHARS` characters."""
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "...")


def requested_resolution(text: str) -> int | None:
    """The H3 resolution of ``?res=``: one or two ASCII digits (``7``, `` 07 ``); None for
    anything else (``²``, ``٣``, ``-1``, ``7.5``, 3,000 digits)."""
    raw = text.strip()
    return int(raw) if re.fullmatch(r"[0-9]{1,2}", raw, flags=re.ASCII) else None


def error_body(status: int, message: str, **extra: Any) -> bytes:
    """The JSON body of an error answer: ``{"error", "status", ...}``."""
    return json.dumps({"error": message, "status": status, **extra}).encode()


def no_snapshot(keys: RedisKeys) -> tuple[int, bytes]:
    """``404`` while nothing has been published under the prefix."""
    return 404, error_body(404, "waiting for the first snapshot: nothing has been published yet "
                                f"under the Redis prefix {keys.prefix!r}", waiting=True)


async def cells_document(redis: aioredis.Redis, keys: RedisKeys, res_text: str) -> tuple[int, bytes]:
    """``(HTTP status, JSON body)`` for ``/api/cells?res=res_text``.

    ``200``: ``{"at", "published_at", "res", "k", "count", "suppressed", "total", "max",
    "cells": [{"id", "value", "boundary"}, ...]}``; ``400`` for a resolution the snapshot was not
    published at (with ``resolutions``; text that is not one or two ASCII digits counts as
    such, echoed cut to :data:`SHOWN_CHARS` characters); ``404`` before the first snapshot. The
    snapshot and its cells are read in one transaction, so they belong together. Redis errors
    propagate.
    """
    res = requested_resolution(res_text)
    pipe = redis.pipeline(transaction=True)
    pipe.get(keys.snapshot)
    if res is not None:
        pipe.hgetall(keys.cells(res))
    body, *found = await pipe.execute()
    if not body:
        return no_snapshot(keys)
    snap = json.loads(body)
    resolutions = [int(r) for r in snap.get("cell_resolutions") or [snap.get("res")] if r is not None]
    cells = found[0] if found else {}
    if res is None or res not in resolutions:
        return 400, error_body(400, f"res must be one of the published resolutions {resolutions}, "
                                    f"got {shown(res_text.strip())}", resolutions=resolutions)
    parts: list[str] = []
    values: list[int] = []
    not_cells = 0
    for cid_b, v in sorted(cells.items()):
        cid = cid_b.decode(errors="replace")
        try:
            boundary = _boundary_json(cid)
        except (ValueError, h3.H3BaseException):
            not_cells += 1  # not an H3 cell id (not written by defacto): nothing to draw
            continue
        value = None if v in (b"null", b"") else int(float(v))
        if value is not None:
            values.append(value)
        parts.append(f'{{"id":{json.dumps(cid)},"value":{json.dumps(value)},"boundary":{boundary}}}')
    head = {"at": snap.get("at"), "published_at": snap.get("published_at"), "res": res,
            "k": snap.get("k"), "count": len(parts), "suppressed": len(parts) - len(values),
            "total": sum(values), "max": max(values) if values else None,
            "not_cells": not_cells}
    doc = json.dumps(head, separators=(",", ":"))[:-1] + ',"cells":[' + ",".join(parts) + "]}"
    return 200, doc.encode()
