"""Kafka for streamscore: clients, JSON record codec, offsets, sources and sinks.

    client.py       the clients and settings gathered in one import (the modules below)
    base.py         what the clients share: lazy creation, error callback, record types
    admin.py        Admin: topic metadata, creation, offsets
    consumer.py     Consumer: assigned partitions or a group subscription
    producer.py     Producer: idempotent, transactional on demand
    translation.py  confluent_kafka errors -> ours, keeping librdkafka's error name
    retry.py        the one retry policy (transient errors, growing waits, a deadline)
    codec.py        JSON values <-> Arrow batches (micro-batch decode, per-record failures)
    headers.py      headers stamped on outputs and dead letters
    dead_letter.py  records that cannot be scored, kept with the reason
    offsets.py      a replay's end-offset snapshot, kept in committed offset metadata
    topics.py       create or check the output topics of replay and tail, one way
    source.py       read partitions between two offsets, stopping by itself (replay)
    group_source.py read a live topic as a consumer group member, with a revocation barrier
    sink.py         write scores, dead letters and offsets per batch (exactly/at-least once)
    loader.py       produce Parquet rows (e.g. the sample data) into a topic as JSON

Only the client modules (base, admin, consumer, producer, translation, retry) import
confluent_kafka. Importing this package imports nothing heavy; ``streamscore.kafka.client``
loads librdkafka.
"""
