"""The streamscore exception tree: every failure a user can cause, and its exit code.

    StreamscoreError                  exit 1   root; never raised bare
    ├── UsageError                    exit 2   bad option values or combinations
    ├── PartialFailure                exit 3   run finished, but some inputs failed
    ├── InputError                    exit 4   input file, column, schema or topic content
    │   └── MappingError              exit 4   a model input cannot be fed from the data
    ├── ModelError                    exit 5   model missing, unreadable or unsupported
    ├── KafkaError                    exit 6   broker unreachable, topic missing or incompatible
    │   ├── KafkaAuthError            exit 6   authentication or authorization refused
    │   ├── TransactionAborted        exit 6   a transaction was rolled back; rerun resumes
    │   └── ProducerFenced            exit 6   another process took over our transactional id
    ├── LockedError                   exit 7   another run holds the output's lock
    └── RegressionDetected            exit 8   bench: slower than the baseline allows

Exit 130 means interrupted (SIGINT). Only ``streamscore.cli`` turns these into exit codes;
library users catch ``StreamscoreError``.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_INTERRUPTED = 130


class StreamscoreError(Exception):
    """Root of every error streamscore raises on purpose."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and the hint, as the single line the CLI prints."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(StreamscoreError):
    """An option value or combination that cannot work."""

    exit_code = 2


class PartialFailure(StreamscoreError):
    """The run completed, but some inputs could not be processed."""

    exit_code = 3


class InputError(StreamscoreError):
    """Input data is missing, unreadable or has the wrong shape."""

    exit_code = 4


class MappingError(InputError):
    """A model input cannot be fed from the columns or fields at hand."""


class ModelError(StreamscoreError):
    """The model cannot be found, loaded or used."""

    exit_code = 5


class KafkaError(StreamscoreError):
    """The Kafka cluster cannot be reached or a topic cannot be used."""

    exit_code = 6

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code  # librdkafka's error name, e.g. "_TRANSPORT", when one caused this


class KafkaAuthError(KafkaError):
    """The Kafka cluster refused our credentials or permissions."""


class TransactionAborted(KafkaError):
    """A Kafka transaction had to be rolled back; nothing of it is visible, a rerun resumes."""


class ProducerFenced(KafkaError):
    """Another process registered our transactional id: this one must stop writing."""


class LockedError(StreamscoreError):
    """Another streamscore run holds the lock on this output."""

    exit_code = 7


class RegressionDetected(StreamscoreError):
    """A benchmark is slower than its baseline by more than the allowed margin."""

    exit_code = 8
