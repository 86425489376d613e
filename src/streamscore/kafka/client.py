"""Kafka clients for streamscore, one module per concern; this module gathers them.

* :class:`KafkaSettings` (:mod:`streamscore.kafka.settings`): bootstrap servers plus raw
  librdkafka properties from ``-X key=value`` and ``--config FILE``. Secrets never appear in
  its repr or in the errors raised here.
* :class:`Admin` (:mod:`~streamscore.kafka.admin`), :class:`Consumer`
  (:mod:`~streamscore.kafka.consumer`) and :class:`Producer` (:mod:`~streamscore.kafka.producer`):
  thin wrappers exposing only what streamscore needs. The librdkafka client behind each is
  created on first use (:mod:`~streamscore.kafka.base`); use them as context managers so they
  are flushed and closed on exit.
* Every confluent_kafka error is translated at the boundary into the most specific of ours,
  keeping librdkafka's error name (:mod:`~streamscore.kafka.translation`); calls that may
  meet a transient error are retried by one policy (:mod:`~streamscore.kafka.retry`).

A broker that cannot be reached is not an error to librdkafka (it retries forever), so
:meth:`Admin.check_reachable` asks for cluster metadata with a deadline before any work.
Only these modules import confluent_kafka (ruff's banned-api rule enforces it).
"""

from __future__ import annotations

from streamscore.kafka.admin import Admin as Admin
from streamscore.kafka.base import TIMESTAMP_NOT_AVAILABLE as TIMESTAMP_NOT_AVAILABLE
from streamscore.kafka.base import CommittedOffset as CommittedOffset
from streamscore.kafka.base import Headers as Headers
from streamscore.kafka.base import KafkaRecord as KafkaRecord
from streamscore.kafka.base import OutgoingRecord as OutgoingRecord
from streamscore.kafka.consumer import Consumer as Consumer
from streamscore.kafka.producer import Producer as Producer
from streamscore.kafka.settings import BOOTSTRAP_ENV as BOOTSTRAP_ENV
from streamscore.kafka.settings import KafkaSettings as KafkaSettings
from streamscore.kafka.settings import parse_properties as parse_properties
from streamscore.kafka.translation import translate as translate
