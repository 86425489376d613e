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
    ├── RegressionDetected            exit 8   bench: slower than the baseline allows
    ├── ComparisonGateFailed          exit 9   compare: flip rate or PSI beyond the limit
    ├── OutputError                   exit 10  the output cannot be written (full, read-only)
    ├── ClusterError                  exit 11  Ray cluster unreachable or lost its workers
    ├── RemoteError                   exit 12  model server refused us or broke the protocol
    │   └── RemoteUnavailable         exit 12  model server away (down, timeout, 429, 5xx)
    │                                          after every retry; a rerun resumes
    ├── WorkerLost                    exit 13  replay --workers: a worker process died of a
    │                                          signal (e.g. SIGKILL); a rerun resumes
    └── Interrupted                   exit 130 stopped by SIGINT (Ctrl-C); a rerun resumes
        └── Terminated                exit 143 stopped by SIGTERM

Exit 130 means interrupted (SIGINT), 143 terminated (SIGTERM). Only ``streamscore.cli``
turns these into exit codes; library users catch ``StreamscoreError``. A command made of
several processes (``replay --workers``) exits with :func:`worst_exit_code` of theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

EXIT_OK = 0
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


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


class ComparisonGateFailed(StreamscoreError):
    """Two models' scores differ more than ``--max-flip-rate`` or ``--max-psi`` allow."""

    exit_code = 9


class OutputError(StreamscoreError):
    """An output (file, folder, lock or report) cannot be written: disk full, read-only…"""

    exit_code = 10


def output_error(path: object, exc: OSError) -> OutputError:
    """The OutputError for an OSError met while writing ``path``."""
    reason = exc.strerror or str(exc)
    return OutputError(
        f"cannot write {path}: {reason}",
        hint="free space or choose a writable location",
    )


class ClusterError(StreamscoreError):
    """The Ray cluster cannot be reached, cannot fit the workers, or lost them for good."""

    exit_code = 11


class Interrupted(StreamscoreError):
    """The run was stopped by SIGINT (Ctrl-C) before it finished; a rerun resumes."""

    exit_code = EXIT_INTERRUPTED


class Terminated(Interrupted):
    """The run was stopped by SIGTERM (cron, systemd, docker stop); a rerun resumes."""

    exit_code = EXIT_TERMINATED


def stopped_by(signum: int | None, what: str) -> Interrupted:
    """The error for a run stopped by signal ``signum``; ``what`` says what was kept."""
    if signum == 15:  # SIGTERM; the signal module is not needed for one number
        return Terminated(f"terminated by SIGTERM; {what}", hint="rerun to resume")
    return Interrupted(f"interrupted; {what}", hint="rerun to resume")


class RemoteError(StreamscoreError):
    """A model server refused our credentials or answered outside the protocol."""

    exit_code = 12


class RemoteUnavailable(RemoteError):
    """A model server stayed unreachable, slow or overloaded through every retry (an outage).

    Nothing is dead-lettered for it: the rows were never judged, so a rerun scores them.
    """


class WorkerLost(StreamscoreError):
    """A worker process of ``replay --workers`` died of a signal, without an exit status."""

    exit_code = 13


def worst_exit_code(codes: Sequence[int]) -> int:
    """The exit status of a run made of processes that exited with ``codes``.

    A failure (any status but 0, 130 and 143; the first one when several failed) beats a stop
    by SIGTERM (143), which beats one by Ctrl-C (130), which beats success. A negative status
    (``subprocess``: killed by that signal) counts as :class:`WorkerLost`.
    """
    found = [WorkerLost.exit_code if code < 0 else code for code in codes]
    failures = [code for code in found if code not in (EXIT_OK, EXIT_INTERRUPTED, EXIT_TERMINATED)]
    if failures:
        return failures[0]
    for stopped in (EXIT_TERMINATED, EXIT_INTERRUPTED):
        if stopped in found:
            return stopped
    return EXIT_OK
