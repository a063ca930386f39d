"""Shell: the live worker, the only package that imports Faust.

- :mod:`~stream.worker.config`: :class:`WorkerConfig`, typed and frozen;
- :mod:`~stream.worker.runtime`: :class:`WorkerRuntime`, batches → partitions → Redis, metrics,
  checkpoints and offset commits;
- :mod:`~stream.worker.faust_app`: the Faust app (agent, timer, revoke hook, web pages);
- :mod:`~stream.worker.faust_compat`: every private Faust/aiokafka hook, with the version checked;
- :mod:`~stream.worker.guards`: what a worker checks before trusting Redis (eviction policy, the
  deployment's pinned settings) and the topic (its id and partition count).
"""
