"""Stage 4: figures out.

- :mod:`~stream.publish.snapshot`: an estimate plus the registry → the snapshot JSON object
  (``schemas/snapshot.schema.json``), the gap ratio, and the gap alerts it raises;
- :mod:`~stream.publish.redis_keys`: :class:`RedisKeys`, the Redis key layout (one object, shared
  by publisher, dashboard and demo);
- :mod:`~stream.publish.redis_publisher`: tallies and checkpoints in, one atomic snapshot out;
- :mod:`~stream.publish.cells_view`: the published cells as the ``/api/cells`` document (served
  by both dashboard and worker);
- :mod:`~stream.publish.metrics`: the worker's Prometheus metrics;
- :mod:`~stream.publish.table`: a snapshot as a text table.
"""
