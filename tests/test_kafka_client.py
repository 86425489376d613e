"""Kafka settings and clients: -X and --config parsing, secrets kept out of sight, errors
translated into ours with librdkafka's code, and the clients against the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import confluent_kafka as ck
import pytest

from streamscore.errors import (
    KafkaAuthError,
    KafkaError,
    ProducerFenced,
    TransactionAborted,
    UsageError,
)
from streamscore.kafka.client import (
    BOOTSTRAP_ENV,
    Admin,
    Consumer,
    KafkaSettings,
    Producer,
    parse_properties,
    translate,
)
from streamscore.kafka.retry import Retry

SECRET = "hunter2-s3cret"


def test_a_mistyped_override_never_echoes_its_value() -> None:
    with pytest.raises(UsageError) as raised:
        KafkaSettings.resolve("b:1", [f"sasl.password:{SECRET}"])
    assert SECRET not in raised.value.one_line()
    assert "sasl.password" in raised.value.one_line()


def test_override_values_are_kept_exactly() -> None:
    settings = KafkaSettings.resolve("b:1", [f"sasl.password= {SECRET} "])
    assert dict(settings.properties)["sasl.password"] == f" {SECRET} "


# ---------------------------------------------------------------- settings


def test_overrides_and_config_file_become_librdkafka_properties(tmp_path: Path) -> None:
    config = tmp_path / "client.properties"
    config.write_text(
        "# a comment\n"
        "! another\n"
        "security.protocol = SASL_SSL\n"
        "sasl.mechanism: PLAIN\n"
        "client.id streamscore-\\\n"
        "    test\n"
        "ssl.ca.location=/etc/ca\\u0020dir/ca.pem\n"
    )

    settings = KafkaSettings.resolve("broker:9092", ["client.id=from-x", "linger.ms=5"], config)

    assert settings.as_librdkafka_dict() == {
        "bootstrap.servers": "broker:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "client.id": "from-x",
        "ssl.ca.location": "/etc/ca dir/ca.pem",
        "linger.ms": "5",
    }


def test_java_jaas_credentials_become_librdkafka_sasl_settings(tmp_path: Path) -> None:
    config = tmp_path / "client.properties"
    config.write_text(
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="alice" password="{SECRET}";\n'
    )

    properties = KafkaSettings.resolve("b:1", [], config).as_librdkafka_dict()

    assert properties["sasl.username"] == "alice"
    assert properties["sasl.password"] == SECRET
    assert "sasl.jaas.config" not in properties


def test_secrets_never_appear_in_repr_str_or_redacted_text() -> None:
    settings = KafkaSettings.resolve(
        "b:1", [f"sasl.password={SECRET}", "ssl.key.password=k3y-pass", "sasl.username=alice"]
    )

    for text in (repr(settings), str(settings), settings.redact(f"login {SECRET} failed")):
        assert SECRET not in text
        assert "k3y-pass" not in text
    assert "alice" in repr(settings)


def test_the_bootstrap_comes_from_the_option_then_x_then_the_file_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.properties"
    config.write_text("bootstrap.servers=from-file:1\n")
    monkeypatch.setenv(BOOTSTRAP_ENV, "from-env:1")

    assert KafkaSettings.resolve("opt:1", ["bootstrap.servers=x:1"]).bootstrap_servers == "opt:1"
    assert KafkaSettings.resolve(None, ["bootstrap.servers=x:1"], config).bootstrap_servers == (
        "x:1"
    )
    assert KafkaSettings.resolve(None, [], config).bootstrap_servers == "from-file:1"
    assert KafkaSettings.resolve().bootstrap_servers == "from-env:1"
    monkeypatch.setenv(BOOTSTRAP_ENV, "changed:1")  # read when called, not when imported
    assert KafkaSettings.resolve().bootstrap_servers == "changed:1"
    assert "bootstrap.servers" not in dict(KafkaSettings.resolve(None, [], config).properties)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, BOOTSTRAP_ENV),
        ({"overrides": ["linger.ms"]}, "-X takes key=value"),
        ({"overrides": ["=5"]}, "-X takes key=value"),
        ({"config_file": Path("/no/such/file.properties")}, "cannot read Kafka config"),
    ],
)
def test_unusable_settings_are_usage_errors(
    kwargs: dict[str, object], fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)

    with pytest.raises(UsageError) as caught:
        KafkaSettings.resolve(**kwargs)  # type: ignore[arg-type]

    assert fragment in caught.value.one_line()


def test_properties_parsing_follows_java_rules() -> None:
    text = "a=1\n  b : two words  \nc\\=d=3\ne\nf=line\\\n\\\n  continued\n#g=no\n"

    assert parse_properties(text) == {
        "a": "1",
        "b": "two words",
        "c=d": "3",
        "e": "",
        "f": "linecontinued",
    }


# ---------------------------------------------------------------- error translation


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (ck.KafkaError._TRANSPORT, KafkaError),
        (ck.KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError),
        (ck.KafkaError.SASL_AUTHENTICATION_FAILED, KafkaAuthError),
        (ck.KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaAuthError),
        (ck.KafkaError._AUTHENTICATION, KafkaAuthError),
        (ck.KafkaError._INVALID_ARG, UsageError),
        (ck.KafkaError.PRODUCER_FENCED, ProducerFenced),
    ],
)
def test_librdkafka_errors_become_ours_keeping_the_code(
    code: int, expected: type[Exception]
) -> None:
    settings = KafkaSettings("b:1", (("sasl.password", SECRET),))
    error = ck.KafkaError(code, f"failed with {SECRET}")

    translated = translate(ck.KafkaException(error), settings, "doing it")

    assert type(translated) is expected
    assert translated.message.startswith("doing it: ")
    assert error.name() in translated.message
    assert SECRET not in translated.one_line()
    if isinstance(translated, KafkaError):
        assert translated.code == error.name()


# ---------------------------------------------------------------- against the broker


@pytest.mark.kafka
def test_an_unreachable_broker_is_reported_within_the_connect_timeout() -> None:
    settings = KafkaSettings("127.0.0.1:1", connect_timeout_s=1.0)

    with Admin(settings) as admin, pytest.raises(KafkaError) as caught:
        admin.check_reachable()

    assert "cannot reach Kafka at 127.0.0.1:1 within" in caught.value.message
    assert caught.value.code is not None


SASL_AGAINST_PLAINTEXT = [
    "security.protocol=SASL_PLAINTEXT",
    "sasl.mechanism=PLAIN",
    "sasl.username=alice",
    f"sasl.password={SECRET}",
]


@pytest.mark.kafka
def test_a_refused_login_is_an_auth_error_without_the_password(kafka_bootstrap: str) -> None:
    # The test broker has no SASL listener: the handshake is refused, as bad credentials are.
    settings = KafkaSettings.resolve(kafka_bootstrap, SASL_AGAINST_PLAINTEXT)

    with Admin(settings) as admin, pytest.raises(KafkaAuthError) as caught:
        admin.check_reachable()

    assert "refused access" in caught.value.message
    assert caught.value.code == "_AUTHENTICATION"
    assert SECRET not in caught.value.one_line()


@pytest.mark.kafka
@pytest.mark.parametrize("bad", ["no.such.property=1", "security.protocol=CARRIER_PIGEON"])
def test_a_bad_client_setting_is_a_usage_error_without_its_secret(
    kafka_bootstrap: str, bad: str
) -> None:
    settings = KafkaSettings.resolve(kafka_bootstrap, [bad, f"sasl.password={SECRET}"])

    with Admin(settings) as admin, pytest.raises(UsageError) as caught:
        admin.check_reachable()

    assert "librdkafka rejected a client setting" in caught.value.message
    assert SECRET not in caught.value.one_line()


@pytest.mark.kafka
def test_admin_describes_creates_and_reads_offsets(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=2)
    settings = KafkaSettings(kafka_bootstrap)
    with Producer(settings) as producer:
        producer.produce(topic, b"v0", None, partition=0, timestamp=1_000)
        producer.produce(topic, b"v1", None, partition=0, timestamp=2_000)
        producer.flush()

    with Admin(settings) as admin:
        assert admin.partition_count(topic) == 2
        assert admin.partition_count(f"{topic}-missing") is None
        assert admin.list_offsets(topic, [0, 1], "earliest") == {0: 0, 1: 0}
        assert admin.list_offsets(topic, [0, 1], "latest") == {0: 2, 1: 0}
        assert admin.list_offsets(topic, [0, 1], 1_500) == {0: 1, 1: 0}
        assert admin.list_offsets(topic, [0, 1], 9_000) == {0: 2, 1: 0}
        admin.create_topic(f"{topic}-new", 3, {"retention.ms": "-1"})
        admin.create_topic(f"{topic}-new", 3)  # already there: fine
        assert admin.partition_count(f"{topic}-new") == 3
        assert admin.topic_config(f"{topic}-new", ["retention.ms"]) == {"retention.ms": "-1"}


@pytest.mark.kafka
def test_committed_offsets_keep_their_metadata(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=2)
    settings = KafkaSettings(kafka_bootstrap)

    with Consumer(settings, f"{topic}-group") as consumer:
        assert consumer.committed(topic, [0, 1]) == {}
        consumer.commit(topic, {0: (0, '{"end":5}'), 1: (0, "")})
        committed = consumer.committed(topic, [0, 1])

    assert committed[0].metadata == '{"end":5}'
    assert (committed[0].offset, committed[1].offset) == (0, 0)


@pytest.mark.kafka
def test_a_record_too_large_to_produce_is_returned_not_raised(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic()
    settings = KafkaSettings(kafka_bootstrap)

    with Producer(settings, config={"message.max.bytes": 2000}) as producer:
        too_large = producer.produce_many(
            topic, [(b"small", None, 0, 0, None), (b"x" * 5000, None, 0, 0, None)]
        )
        producer.flush()

    assert too_large == [1]


def test_outputs_are_compressed_unless_x_says_otherwise() -> None:
    default = Producer(KafkaSettings("b:1"))
    overridden = Producer(KafkaSettings("b:1", (("compression.type", "zstd"),)))

    assert default._config["compression.type"] == "lz4"
    assert overridden._config["compression.type"] == "zstd"


FENCED_CODES = {"_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"}


def assert_fenced(error: KafkaError, action: str) -> None:
    """``error`` is our one-line report of a producer that a newer instance fenced."""
    assert type(error) is ProducerFenced  # a KafkaError callers can catch by type
    assert error.code in FENCED_CODES
    assert error.message.startswith(
        f"{action}: another process with the same transactional id took over: "
    )
    assert error.message.endswith(f"[{error.code}]")


@pytest.mark.kafka
def test_a_second_transactional_producer_fences_the_first(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic()
    settings = KafkaSettings(kafka_bootstrap)
    with (
        Producer(settings, transactional_id=f"{topic}-tx") as zombie,
        Producer(settings, transactional_id=f"{topic}-tx") as successor,
    ):
        zombie.init_transactions()
        zombie.begin_transaction()
        zombie.produce(topic, b"from the zombie", None, partition=0)
        successor.init_transactions()

        with pytest.raises(KafkaError) as caught:
            zombie.commit_transaction()
        assert_fenced(caught.value, "committing a transaction")
        zombie.close()  # fenced: nothing left to deliver or abort, and nothing raised
        successor.begin_transaction()
        successor.produce(topic, b"from the successor", None, partition=0)
        successor.commit_transaction()

    assert committed_values(kafka_bootstrap, topic) == [b"from the successor"]


@pytest.mark.kafka
def test_a_transaction_the_broker_timed_out_is_reported_as_rolled_back_not_as_fenced(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic()
    # The broker rolls back a transaction open longer than this (checked every second here)
    # and bumps the producer's epoch, which librdkafka then reports as "fenced".
    settings = KafkaSettings(kafka_bootstrap, (("transaction.timeout.ms", "2000"),))
    with Producer(settings, transactional_id=f"{topic}-tx") as producer:
        producer.init_transactions()
        producer.begin_transaction()
        producer.produce(topic, b"outlived its timeout", None, partition=0)
        producer.flush()
        time.sleep(4)

        with pytest.raises(TransactionAborted) as caught:
            producer.commit_transaction()

    message = caught.value.one_line()
    assert "the broker rolled back the transaction" in message
    assert "longer than transaction.timeout.ms (2s)" in message
    assert "took over" not in message
    assert committed_values(kafka_bootstrap, topic) == []


@pytest.mark.kafka
def test_a_producer_fenced_mid_transaction_fails_with_our_error_not_its_close(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic()
    settings = KafkaSettings(kafka_bootstrap)
    with Producer(settings, transactional_id=f"{topic}-tx") as successor:
        with (
            pytest.raises(KafkaError) as caught,
            Producer(settings, transactional_id=f"{topic}-tx") as zombie,
        ):
            zombie.init_transactions()
            zombie.begin_transaction()
            zombie.produce(topic, b"from the zombie", None, partition=0)
            zombie.flush()
            successor.init_transactions()  # takes over mid-transaction
            zombie.send_offsets_to_transaction(topic, {0: (1, "")}, group_metadata(settings))

        assert_fenced(caught.value, "committing input offsets in the transaction")
        assert zombie.fatal
        zombie.close()  # closed already on the way out: nothing raised twice either

    assert committed_values(kafka_bootstrap, topic) == []


def group_metadata(settings: KafkaSettings) -> object:
    """A consumer group's identity, as a replay sends offsets for."""
    with Consumer(settings, "streamscore-test-fencing") as consumer:
        return consumer.group_metadata()


def test_a_transactional_step_that_keeps_timing_out_gives_up_by_its_deadline_with_the_cause() -> (
    None
):
    producer = Producer(KafkaSettings("127.0.0.1:1", connect_timeout_s=1.0))
    deadline_s = 0.5
    producer._txn_timeout = lambda: deadline_s  # type: ignore[method-assign]
    timeouts: list[float] = []

    def call(timeout: float) -> None:
        timeouts.append(timeout)
        raise ck.KafkaException(
            ck.KafkaError(
                ck.KafkaError._TIMED_OUT, "Transaction coordinator timed out", retriable=True
            )
        )

    with pytest.raises(KafkaError) as caught:
        producer._transactional("committing a transaction", call)

    assert caught.value.code == "_TIMED_OUT"
    assert "Transaction coordinator timed out [_TIMED_OUT]" in caught.value.message
    assert f"still failing after {len(timeouts)} attempt(s)" in caught.value.message
    assert len(timeouts) > 1
    assert all(0 < timeout <= deadline_s for timeout in timeouts)
    assert timeouts == sorted(timeouts, reverse=True)  # each call gets the time left


def committed_values(bootstrap: str, topic: str) -> list[bytes]:
    """The values a read_committed consumer sees in partition 0 of ``topic``."""
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([ck.TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None, "partition end not reached"
            if message.error() is not None:
                return values
            values.append(message.value())
    finally:
        consumer.close()


def test_the_retry_policy_waits_with_the_given_wait_and_retries_only_what_it_is_told() -> None:
    waits: list[float] = []
    calls: list[float] = []

    def flaky(left: float) -> str:
        calls.append(left)
        if len(calls) < 3:
            raise BufferError("queue full")
        return "done"

    retry = Retry(5.0, first_s=0.01, max_s=0.02, wait=waits.append, retry_on=(BufferError,))

    assert retry.run(flaky, lambda exc: isinstance(exc, BufferError)) == "done"
    assert waits == [0.01, 0.02]
    assert retry.attempts == 3
    # Not named in retry_on: raised at once, never retried.
    with pytest.raises(BufferError):
        Retry(5.0, wait=waits.append).run(flaky_always := _raiser(BufferError()), lambda _: True)
    assert flaky_always.calls == 1


class _raiser:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    def __call__(self, _left: float) -> None:
        self.calls += 1
        raise self.exc


@pytest.mark.kafka
def test_a_producer_queue_that_stays_full_fails_by_the_deadline_instead_of_waiting_forever() -> (
    None
):
    # No broker answers, so the one-record queue never drains: the second record waits for
    # room under the retry policy's deadline (3 connect timeouts), then fails in one line.
    settings = KafkaSettings("127.0.0.1:1", connect_timeout_s=0.5)
    with Producer(settings, config={"queue.buffering.max.messages": 1}) as producer:
        started = time.monotonic()
        with pytest.raises(KafkaError) as caught:
            producer.produce_many("t", [(b"a", None, 0, 0, None), (b"b", None, 0, 0, None)])
        waited = time.monotonic() - started
        producer.gave_up = True  # nothing to deliver on close

    assert "local queue stayed full" in caught.value.message
    assert caught.value.code == "_QUEUE_FULL"
    assert 1.0 <= waited < 10
