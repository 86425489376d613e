"""The README's examples run as written (as sqlite-utils tests its docs).

Every fenced code block in README.md carries a marker comment just above it:
``<!-- readme-test: run -->`` for blocks that work offline, which this test runs, each in a
fresh folder holding a link to ``sample_data/``; ``<!-- readme-test: skip (why) -->`` for the
others (a Kafka broker needed, installation, benchmarks). A block without a marker fails the
test, so a new example is either run or skipped with a reason. The one liberty taken:
``streamscore bench`` gets tiny measurement windows, so the sweep takes seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<verdict>run|skip)(?P<why>[^>]*)-->\n)?"
    r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
# Applied to bench only: the README's sweep with its default windows takes minutes.
PRELUDE = """
streamscore() {
    if [ "$1" = bench ]; then
        command streamscore "$@" --warmup 0.01 --window 0.02 --max-duration 0.06
    else
        command streamscore "$@"
    fi
}
"""


def blocks() -> list[re.Match[str]]:
    """Every fenced block of the README, in order."""
    return list(BLOCK.finditer(README.read_text()))


def line_of(block: re.Match[str]) -> int:
    return block.string.count("\n", 0, block.start("lang")) + 1


RUN = [(line_of(b), b["lang"], b["body"]) for b in blocks() if b["verdict"] == "run"]


def test_every_readme_block_is_marked_run_or_skip_with_a_reason() -> None:
    unmarked = [line_of(b) for b in blocks() if b["verdict"] is None]
    assert unmarked == [], f"README.md blocks at lines {unmarked} have no readme-test marker"
    reasons = [b["why"].strip() for b in blocks() if b["verdict"] == "skip"]
    assert all(reason.startswith("(") and len(reason) > 5 for reason in reasons), reasons
    assert len(RUN) >= 4


@pytest.mark.parametrize(("line", "lang", "body"), RUN, ids=[f"README.md:{r[0]}" for r in RUN])
def test_readme_block_runs(tmp_path: Path, line: int, lang: str, body: str) -> None:
    (tmp_path / "sample_data").symlink_to(REPO / "sample_data")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if lang == "python":
        command = [sys.executable, "-c", body]
    else:
        assert lang == "bash", f"README.md:{line}: cannot run a {lang!r} block"
        command = ["bash", "-euo", "pipefail", "-c", PRELUDE + body]

    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 0, f"README.md:{line} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
