"""Stage 3: the engine driven in event time; no Kafka, Redis or asyncio here.

- :mod:`~stream.estimate.engine_options`: :class:`EngineOptions` (typed, ``*_ms``) → an engine;
- :mod:`~stream.estimate.windows`: :class:`EventTimeWindows`, watermark, lateness and
  ``too_late``; calls back when a window closes (a replay publishes, a partition tallies);
- :mod:`~stream.estimate.partition`: :class:`PartitionState`, one Kafka partition's messages →
  windows → tallies, with its offset;
- :mod:`~stream.estimate.checkpoint`: a partition's resumable state as one blob;
- :mod:`~stream.estimate.fingerprint`: the settings that give tallies and checkpoints their
  meaning, and the one-line difference between two of them.
"""
