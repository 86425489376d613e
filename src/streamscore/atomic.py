"""Write a whole file or nothing: reports and pictures appear only complete.

The data goes to a hidden temporary file beside the target, renamed over it when complete; on
any failure (disk full, read-only, a signal) the temporary file is removed and an existing
target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomically(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), all at once or not at all."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("wb") as file:
            file.write(payload)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise
