"""Kafka transport for signed batch envelopes: the Avro wire form (``kafka.avro``) and, alongside it, producer
and consumer adapters. Importing this package loads nothing; each module imports its driver itself."""
