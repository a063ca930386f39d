"""Stage 2: bytes and records → validated, pseudonymized, binned batches.

- :mod:`~stream.decode.frame`: the columnar batch frame (encode and decode, zero-copy views);
- :mod:`~stream.decode.messages`: Kafka message values of any encoding (frame, JSON, Avro,
  watermark control) → one set of :data:`~stream.contract.PingColumns`, rejects and watermarks;
- :mod:`~stream.decode.validate`: :class:`~stream.decode.validate.PingDecoder`, ranges and
  reference checks, device pseudonyms → keyed hashes, locations → cells: a
  :class:`~stream.decode.validate.PingBatch` for the engine.

Pseudonyms never leave this stage: what comes out carries only keyed hashes.
"""
