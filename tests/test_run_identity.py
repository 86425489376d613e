"""One run identity: batch's output stamp and replay's resume check come from one method."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streamscore.batch import options_digest
from streamscore.config import BatchOptions, KeepColumns, OnError, ReplayOptions, ScoringOptions
from streamscore.kafka.settings import KafkaSettings
from streamscore.replay import ReplayRun
from streamscore.reporting import SilentReporter

SCORING = ScoringOptions(model="m", features=("a", "b"), keep=KeepColumns.parse("a"))


def batch_digest(scoring: ScoringOptions) -> str:
    return options_digest(BatchOptions(Path("in"), Path("out"), scoring, on_error=OnError.skip))


def replay_identity(scoring: ScoringOptions) -> str:
    options = ReplayOptions(KafkaSettings("b:1"), "in", "out", scoring, from_timestamp_ms=5)
    model: Any = SimpleNamespace(ref=SimpleNamespace(sha256="abc"))
    return ReplayRun(options, SilentReporter()).identity(model)


def old_digest(described: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def test_digests_are_unchanged_so_existing_outputs_and_replays_still_match() -> None:
    scoring = {"features": ["a", "b"], "outputs": None, "keep": ["list", ["a"]]}
    scoring["reject_nan"] = False
    assert batch_digest(SCORING) == old_digest({**scoring, "on_error": "skip"})
    assert replay_identity(SCORING) == old_digest(
        {
            **scoring,
            "output_topic": "out",
            "dead_letter_topic": "out.dlq",
            "model_sha256": "abc",
            "from_timestamp_ms": 5,
        }
    )


@pytest.mark.parametrize(
    "change",
    [
        {"features": ("a",)},
        {"outputs": ("label",)},
        {"keep": KeepColumns("none")},
        {"reject_nan": True},
    ],
)
def test_every_scoring_option_changes_both_identities(change: dict[str, Any]) -> None:
    other = dataclasses.replace(SCORING, **change)
    assert batch_digest(other) != batch_digest(SCORING)
    assert replay_identity(other) != replay_identity(SCORING)
    assert other.digest() != SCORING.digest()
