"""The worker's asyncio Redis client packs commands in C (hiredis) into the very bytes redis-py's
own Python packer writes, and works against a real Redis."""

from __future__ import annotations

import asyncio
import math
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from stream.publish.redis_client import async_redis, hiredis_packing

ARGS = st.lists(st.one_of(
    st.text(max_size=30), st.binary(max_size=30), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False).filter(math.isfinite),
    st.binary(max_size=30).map(memoryview)), min_size=0, max_size=12)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["HSET", "SET", "ZADD", "CONFIG GET", "XADD"]), args=ARGS)
def test_hiredis_packing_writes_redis_pys_bytes(name: str, args: list[object]) -> None:
    python, fast = Connection(), hiredis_packing(Connection)()
    assert type(fast) is not Connection  # hiredis is installed: the C packer is in use
    assert b"".join(fast.pack_command(name, *args)) == b"".join(python.pack_command(name, *args))


@pytest.mark.integration  # a real Redis
def test_a_large_pipeline_lands_whole(redis_url: str) -> None:
    key = f"defacto-test:packing:{uuid.uuid4().hex[:8]}"
    cells = {f"88{i:013x}": "null" if i % 7 == 0 else str(i) for i in range(20_000)}

    async def run() -> tuple[int, bytes | None, bytes | None]:
        r = async_redis(redis_url)
        try:
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=cells)
                await pipe.execute()
            return (await r.hlen(key), await r.hget(key, "8800000000004d2"),
                    await r.hget(key, "880000000000000"))
        finally:
            await r.delete(key)
            await r.aclose()

    assert asyncio.run(run()) == (20_000, b"1234", b"null")
