"""Stage 1: where pings and reference data come from.

- :mod:`~stream.sources.ping_files`: JSON Lines / CSV ping files (optionally gzipped) as chunks of
  :class:`~stream.contract.Record`; :mod:`~stream.sources.columnar_files`: the same files parsed
  in blocks with polars (the per-line path for every row it cannot vouch for);
  :mod:`~stream.sources.merged_files`: several of them as one input, merged by event time;
- :mod:`~stream.sources.reference_files`: regions, registry, reference population, calibration,
  cell plan and the simulator's truth, with one-line :class:`~stream.contract.InputError`
  (:mod:`~stream.sources.text_files` opens them, gzipped or not);
- :mod:`~stream.sources.key_file`: the pseudonymization key;
- :mod:`~stream.sources.kafka_producer`: ping files or columns into the Kafka pings topic;
- :mod:`~stream.sources.simulation`: the simulator (:mod:`stream.simulator`, the truth oracle) as
  ping columns, paced into Kafka or fed straight into an engine.
"""
