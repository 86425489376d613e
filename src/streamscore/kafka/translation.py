"""confluent_kafka errors translated into ours at the boundary, keeping librdkafka's
error name: KafkaAuthError (credentials, ACLs), ProducerFenced (another process took over
the transactional id), KafkaError (broker unreachable, topic missing), TransactionAborted
(a transaction was rolled back; the run can resume), UsageError (a client property
librdkafka rejects). Secrets never appear in the messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import confluent_kafka as ck

from streamscore.errors import (
    KafkaAuthError,
    KafkaError,
    ProducerFenced,
    StreamscoreError,
    UsageError,
)
from streamscore.kafka.settings import KafkaSettings

_E = ck.KafkaError


AUTH_CODES = frozenset(
    {
        _E._AUTHENTICATION,
        _E.SASL_AUTHENTICATION_FAILED,
        _E.UNSUPPORTED_SASL_MECHANISM,
        _E.ILLEGAL_SASL_STATE,
        _E.TOPIC_AUTHORIZATION_FAILED,
        _E.GROUP_AUTHORIZATION_FAILED,
        _E.CLUSTER_AUTHORIZATION_FAILED,
        _E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        _E.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
    }
)


MISSING_TOPIC_CODES = frozenset(
    {_E.UNKNOWN_TOPIC_OR_PART, _E._UNKNOWN_TOPIC, _E._UNKNOWN_PARTITION}
)


UNREACHABLE_CODES = frozenset(
    {_E._TRANSPORT, _E._ALL_BROKERS_DOWN, _E._TIMED_OUT, _E._RESOLVE, _E._SSL, _E._MSG_TIMED_OUT}
)


CONFIG_CODES = frozenset({_E._INVALID_ARG, _E._INVALID_TYPE, _E.INVALID_CONFIG})


FENCED_CODES = frozenset({_E._FENCED, _E.PRODUCER_FENCED, _E.INVALID_PRODUCER_EPOCH})


COORDINATOR_CODES = frozenset(
    {_E.NOT_COORDINATOR, _E.COORDINATOR_LOAD_IN_PROGRESS, _E.COORDINATOR_NOT_AVAILABLE}
)


def kafka_error_of(exc: BaseException) -> ck.KafkaError | None:
    if isinstance(exc, ck.KafkaException) and exc.args and isinstance(exc.args[0], ck.KafkaError):
        return exc.args[0]
    return None


def translate(
    error: ck.KafkaError | BaseException, settings: KafkaSettings, action: str
) -> StreamscoreError:
    """The streamscore error for a confluent_kafka error met while doing ``action``."""
    kerr = error if isinstance(error, ck.KafkaError) else kafka_error_of(error)
    if kerr is None:
        return KafkaError(f"{action}: {settings.redact(str(error))}")
    code, name = kerr.code(), kerr.name()
    text = settings.redact(kerr.str())
    where = settings.bootstrap_servers
    if code in AUTH_CODES:
        return KafkaAuthError(
            f"{action}: Kafka at {where} refused access: {text} [{name}]",
            hint="check the credentials and ACLs given with --config or -X",
            code=name,
        )
    if code in MISSING_TOPIC_CODES:
        return KafkaError(f"{action}: {text} [{name}]", code=name)
    if code in UNREACHABLE_CODES:
        return KafkaError(
            f"{action}: cannot reach Kafka at {where}: {text} [{name}]",
            hint="check --bootstrap-servers and that the broker is up",
            code=name,
        )
    if code in CONFIG_CODES:
        return UsageError(f"{action}: librdkafka rejected a client setting: {text} [{name}]")
    if code in FENCED_CODES:
        return ProducerFenced(
            f"{action}: another process with the same transactional id took over: {text} [{name}]",
            hint="run one replay per input and output topic at a time",
            code=name,
        )
    return KafkaError(f"{action}: {text} [{name}]", code=name)


@contextmanager
def translated(settings: KafkaSettings, action: str) -> Iterator[None]:
    try:
        yield
    except ck.KafkaException as exc:
        raise translate(exc, settings, action) from None
