"""asyncio Redis clients whose commands are packed in C by hiredis.

redis-py's synchronous client packs commands with ``hiredis.pack_command`` when hiredis is
installed; its asyncio client still packs every argument in Python (redis/redis-py issue #4176,
fix pending in pull request #4191). A snapshot writes tens of thousands of cell fields per
window, and packing them in Python was 60 % of a live publishing round
(``bench/live_throughput.py --stages latency --profile``). :func:`async_redis` gives the asyncio
client the synchronous client's packer (the same bytes on the wire; tested against redis-py's
own packer).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import redis.asyncio as aioredis
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis


class _HiredisPacking:
    """Mixin for an asyncio connection class: :meth:`pack_command` by hiredis."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command in the Redis protocol (one ``bytes``); raises redis' ``DataError`` for an
        argument hiredis cannot encode. Arguments go to hiredis as they are; only when it
        refuses one (a ``memoryview``, say) does the synchronous client's serializer convert
        them (it scans every argument in Python, a third of the packing of a snapshot)."""
        name = args[0]
        head = tuple(name.encode().split() if isinstance(name, str) else name.split())
        try:
            return [hiredis.pack_command(head + args[1:])]
        except TypeError:
            return self._serializer.pack(*args)


@cache
def hiredis_packing(connection_class: type) -> type:
    """``connection_class`` (TCP, TLS or Unix socket) with commands packed by hiredis; itself
    when hiredis is not installed."""
    if not HIREDIS_AVAILABLE:
        return connection_class
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})


def async_redis(url: str, **kwargs: Any) -> aioredis.Redis:
    """``redis.asyncio.from_url(url, **kwargs)`` whose connections pack commands with hiredis."""
    client = aioredis.from_url(url, **kwargs)
    pool = client.connection_pool
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client
