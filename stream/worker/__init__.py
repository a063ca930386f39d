"""Shell: the live worker, the only package that imports Faust.

- :mod:`~stream.worker.config`: :class:`WorkerConfig`, typed and frozen;
- :mod:`~stream.worker.runtime`: :class:`WorkerRuntime`, batches → partitions → Redis, metrics,
  checkpoints and offset commits;
- :mod:`~stream.worker.kafka_batch`: the confluent-kafka consumer (whole batches, manual commits,
  rebalance callbacks) and the dead-letter producer;
- :mod:`~stream.worker.faust_app`: the Faust shell (lifecycle, web pages) and the ingest service;
- :mod:`~stream.worker.faust_compat`: the Faust version the shell was checked against;
- :mod:`~stream.worker.guards`: what a worker checks before trusting Redis (eviction policy, the
  deployment's pinned settings) and the topic (its id and partition count).
"""
