"""``streamscore tail`` without a broker: option checks, the fit check of a new model version,
and what stop signals do."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pytest

from helpers.runs import invoke
from streamscore.config import ScoringOptions, TailOptions
from streamscore.errors import MappingError, UsageError
from streamscore.kafka.settings import KafkaSettings
from streamscore.model.repository import resolve_model
from streamscore.rollout import check_fits, prepare_arm

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "sample_data" / "models"
SAMPLE_DAY = REPO / "sample_data" / "transactions" / "date=2026-11-04" / "part-0.parquet"
SETTINGS = KafkaSettings("127.0.0.1:9")


def options(**changes: object) -> TailOptions:
    base: dict[str, object] = {
        "kafka": SETTINGS,
        "input_topic": "in",
        "output_topic": "out",
        "group": "g",
        "scoring": ScoringOptions(model=str(MODELS / "fraud")),
    }
    return TailOptions(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"output_topic": "in"}, "different topics"),
        ({"dlq_topic": "out"}, "different topics"),
        ({"group": " "}, "--group"),
        ({"max_batch": 0}, "--max-batch"),
        ({"start_from": "middle"}, "--start-from"),
        ({"metrics_port": 70000}, "--metrics-port"),
        ({"shadow_topic": "s"}, "--shadow-topic needs --shadow"),
        ({"input_topic": "bad topic"}, "not a valid Kafka topic name"),
    ],
)
def test_impossible_options_are_usage_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        options(**changes)


def test_default_side_topics_are_named_after_the_output() -> None:
    o = options(shadow="1")
    assert (o.dead_letter_topic, o.shadow_output_topic) == ("out.dlq", "out.shadow")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [(["--canary", "2:200"], "VERSION:PERCENT"), (["--start-from", "now"], "--start-from")],
)
def test_bad_cli_values_exit_2_with_one_line(extra: list[str], fragment: str) -> None:
    result = invoke(
        "tail", "-b", "127.0.0.1:9", "-i", "in", "-o", "out", "-g", "g",
        "-m", str(MODELS / "fraud"), *extra,
    )  # fmt: skip
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr


def test_an_unreachable_broker_exits_6_with_one_line() -> None:
    result = invoke(
        "tail", "-b", "127.0.0.1:9", "-i", "in", "-o", "out", "-g", "g",
        "-m", str(MODELS / "fraud"), "--connect-timeout", "1",
    )  # fmt: skip
    assert result.exit_code == 6
    assert "cannot reach Kafka at 127.0.0.1:9" in result.stderr


def records(count: int, drop: str | None = None) -> list[bytes | None]:
    frame = pl.read_parquet(SAMPLE_DAY).drop("event_time").head(count)
    if drop:
        frame = frame.drop(drop)
    return list(frame.write_ndjson().encode().splitlines())


def test_a_new_version_fits_when_recent_records_feed_it() -> None:
    arm = prepare_arm("primary", resolve_model(MODELS / "fraud_columns"), ScoringOptions("x"))
    check_fits(arm, records(20), current={})


def test_a_new_version_reading_fields_the_records_lack_does_not_fit() -> None:
    arm = prepare_arm("primary", resolve_model(MODELS / "fraud_columns"), ScoringOptions("x"))
    with pytest.raises(MappingError, match="merchant_category"):
        check_fits(arm, records(20, drop="merchant_category"), current={})
    with pytest.raises(MappingError, match="none of the last 2 input records"):
        check_fits(arm, [b"not json", orjson.dumps({"f00": 1})], current={})


def test_before_any_record_a_new_version_must_read_what_the_current_one_reads() -> None:
    arm = prepare_arm("primary", resolve_model(MODELS / "fraud_columns"), ScoringOptions("x"))
    dense = {f"f{i:02d}": pa.float64() for i in range(30)}
    with pytest.raises(MappingError, match="merchant_category"):
        check_fits(arm, [], current=dense)
    check_fits(arm, [], current={**dense, "merchant_category": pa.string()})


def run_with_signals(body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """
        import os, signal, threading, time
        from streamscore.shutdown import stop_on_signals
        stop = threading.Event()
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_first_signal_asks_to_stop_and_a_second_exits_at_once() -> None:
    done = run_with_signals(
        """
        with stop_on_signals(stop, grace_s=60):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(5)
            print("stopping", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        """
    )
    assert done.stdout == "stopping\n"
    assert done.returncode == 128 + 15


def test_a_stop_that_takes_longer_than_the_grace_period_is_cut_short() -> None:
    done = run_with_signals(
        """
        with stop_on_signals(stop, grace_s=0.2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)  # a shutdown that hangs
        """
    )
    assert done.returncode == 128 + 2


def test_a_stop_finished_in_time_exits_normally() -> None:
    done = run_with_signals(
        """
        with stop_on_signals(stop, grace_s=0.3):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(5)
        time.sleep(1)  # past the grace period: the timer was cancelled
        print("done", flush=True)
        """
    )
    assert (done.returncode, done.stdout) == (0, "done\n")


class _Paused:
    """A tail source that records pauses and resumes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def idle(self) -> None:
        pass

    def resume(self) -> None:
        self.calls.append("resume")


def _successor_wait(
    monkeypatch: pytest.MonkeyPatch, *, answers: bool, successor_after: int | None
) -> tuple[bool, _Paused, int]:
    """Tail's wait for the successor of a server model version that went away: the primary
    answers its readiness probe or not; the watcher finds a new version at the given check."""
    import threading
    from types import SimpleNamespace

    from streamscore import tail as tail_module
    from streamscore.errors import ModelError
    from streamscore.reporting import SilentReporter

    monkeypatch.setattr(tail_module, "VANISHED_GRACE_S", 0.3)
    monkeypatch.setattr(tail_module, "SERVER_PROBE_S", 0.01)
    run = tail_module.TailRun(options(), SilentReporter(), threading.Event())
    primary = SimpleNamespace(
        ref=SimpleNamespace(server="http://127.0.0.1:9"),
        scorer=SimpleNamespace(model=SimpleNamespace(probe=lambda: answers)),
    )
    run.serving = SimpleNamespace(primary=primary)  # type: ignore[assignment]
    checks = 0

    def check_now() -> bool:
        nonlocal checks
        checks += 1
        if checks == successor_after:
            watcher.current = object()  # a new version serves
            return True
        return False

    watcher = SimpleNamespace(current=primary, check_now=check_now)
    run.watcher = watcher  # type: ignore[assignment]
    source = _Paused()
    waited = run._wait_for_successor(source, ModelError("version 1 not found"))  # type: ignore[arg-type]
    return waited, source, checks


def test_a_vanished_server_version_pauses_tail_until_its_successor_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited, source, checks = _successor_wait(monkeypatch, answers=False, successor_after=3)
    assert waited and checks == 3 and source.calls == ["pause", "resume"]


def test_a_vanished_server_version_with_no_successor_in_time_fails_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited, source, checks = _successor_wait(monkeypatch, answers=False, successor_after=None)
    assert not waited and checks > 1 and source.calls == ["pause"]


def test_a_model_error_while_the_primary_version_still_answers_is_not_waited_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited, source, checks = _successor_wait(monkeypatch, answers=True, successor_after=1)
    assert not waited and checks == 0 and source.calls == []
