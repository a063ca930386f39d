"""defacto's moving parts. The folders are the pipeline; data flows down this list:

1. :mod:`stream.sources`  where pings and reference data come from (files, Kafka producer,
   the simulator beside it as the truth oracle);
2. :mod:`stream.decode`   bytes and records → validated, pseudonymized, binned batches
   (:mod:`stream.contract` is the ping contract they are checked against);
3. :mod:`stream.estimate` the engine (:mod:`estimators`) driven in event time: windows,
   partitions, checkpoints;
4. :mod:`stream.publish`  figures out: snapshots, the Redis key layout and publisher, metrics.

Shells at the edge: :mod:`stream.worker` (Faust), :mod:`stream.web` (dashboard),
:mod:`stream.local` (embedded broker and Redis) and :mod:`stream.cli` (argv → config → call).
Stages never import the shells, Faust or aiohttp; nothing imports the CLI but the ``stream/app.py``
shim of ``faust -A stream.app worker`` (``tests/test_layers.py``).
"""
